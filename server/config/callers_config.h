#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "config/config.h"
#include "yaml-cpp/yaml.h"
#include "yaml/yaml_reader.h"

namespace traffik {

// Parsing of `auth:` and `callers:` (issue 10), for config.cc's parser.

// The longest API key accepted (bytes), from a file or the environment.
inline constexpr size_t kMaxApiKeyBytes = 4096;
// The longest `mtls_identity` (bytes).
inline constexpr size_t kMaxMtlsIdentityBytes = 1024;

// `auth: off | required`.
absl::StatusOr<AuthMode> ParseAuthMode(const YamlReader& reader, const YAML::Node& node);

// Parses the `callers:` list into config->callers; needs config->tenants and
// config->default_tenant settled (granted tenants must exist). A key file or
// environment variable is read here; errors name the field, never a key.
absl::Status ParseCallers(const YamlReader& reader, const YAML::Node& node,
                          Config* config);

// `auth: required` needs a caller: the error is at `auth_node`.
absl::Status CheckAuthHasCallers(const YamlReader& reader, const YAML::Node& auth_node,
                                 const Config& config);

// The raw 32-byte SHA-256 digest of `data` (OpenSSL libcrypto).
std::string Sha256Digest(std::string_view data);

}  // namespace traffik

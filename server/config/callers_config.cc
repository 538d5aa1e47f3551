#include "config/callers_config.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace traffik {
namespace {

constexpr size_t kMaxCallerNameBytes = 64;

absl::string_view Absl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

bool IsCallerNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.' || c == '-';
}

// A key may be sent as `authorization: Bearer <key>`: printable ASCII
// without spaces (gRPC metadata values are printable ASCII anyway).
bool IsKeyChar(unsigned char c) { return c > 0x20 && c < 0x7f; }

// Checks a bare key (from a file or the environment) and returns its digest.
// `what` names the field in errors; the key itself never appears.
absl::StatusOr<std::string> KeyDigest(const YamlReader& reader, const YAML::Node& at,
                                      const std::string& path, std::string key,
                                      std::string_view what) {
  if (!key.empty() && key.back() == '\n') {
    key.pop_back();  // one trailing newline, as a Secret file often has
    if (!key.empty() && key.back() == '\r') key.pop_back();
  }
  if (key.empty()) return reader.Error(at, path, absl::StrCat(Absl(what), " is empty"));
  if (key.size() > kMaxApiKeyBytes) {
    return reader.Error(
        at, path,
        absl::StrCat(Absl(what), " is longer than ", kMaxApiKeyBytes, " bytes"));
  }
  for (unsigned char c : key) {
    if (!IsKeyChar(c)) {
      return reader.Error(
          at, path,
          absl::StrCat(Absl(what),
                       " holds a byte outside printable ASCII or a space (only one "
                       "trailing newline is stripped)"));
    }
  }
  std::string digest = Sha256Digest(key);
  // Best effort: do not leave the key in freed memory.
  std::fill(key.begin(), key.end(), '\0');
  return digest;
}

absl::StatusOr<std::string> ReadKeyFile(const YamlReader& reader, const YAML::Node& at,
                                        const std::string& path,
                                        const std::string& file) {
  const std::string quoted = QuoteYamlValue(file);
  int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return reader.Error(
        at, path,
        absl::StrCat("cannot read key file ", quoted, ": ", std::strerror(errno)));
  }
  std::string key;
  char buf[1024];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      return reader.Error(
          at, path,
          absl::StrCat("cannot read key file ", quoted, ": ", std::strerror(err)));
    }
    if (n == 0) break;
    key.append(buf, static_cast<size_t>(n));
    if (key.size() > kMaxApiKeyBytes + 2) {
      close(fd);
      std::fill(key.begin(), key.end(), '\0');
      return reader.Error(at, path,
                          absl::StrCat("key file ", quoted, " is longer than ",
                                       kMaxApiKeyBytes, " bytes"));
    }
  }
  close(fd);
  std::fill(buf, buf + sizeof(buf), '\0');
  return KeyDigest(reader, at, path, std::move(key), absl::StrCat("key file ", quoted));
}

absl::StatusOr<std::string> ReadKeyEnv(const YamlReader& reader, const YAML::Node& at,
                                       const std::string& path, const std::string& name) {
  if (name.empty() || name.size() > 256 || name.find('=') != std::string::npos) {
    return reader.Error(at, path, "expected an environment variable name");
  }
  const char* value = std::getenv(name.c_str());
  const std::string what = absl::StrCat("environment variable ", QuoteYamlValue(name));
  if (value == nullptr) return reader.Error(at, path, absl::StrCat(what, " is not set"));
  return KeyDigest(reader, at, path, std::string(value), what);
}

absl::StatusOr<std::string> ParseHexDigest(const YamlReader& reader, const YAML::Node& at,
                                           const std::string& path,
                                           const std::string& hex) {
  bool ok = hex.size() == 64;
  for (char c : hex) ok = ok && absl::ascii_isxdigit(static_cast<unsigned char>(c));
  // The value is a digest, not a key, but a pasted key must not be echoed
  // either: the error names the expected form only.
  if (!ok) {
    return reader.Error(at, path,
                        "expected 64 hex digits (the SHA-256 of the key, e.g. from "
                        "`printf %s KEY | sha256sum`)");
  }
  return absl::HexStringToBytes(Absl(hex));
}

absl::Status ParseCaller(const YamlReader& reader, const YAML::Node& item,
                         const std::string& path, const Config& config,
                         CallerConfig* caller) {
  std::optional<YAML::Node> name_node, tenants_node;
  std::vector<std::string> credentials;  // keys given, for the "exactly one" rule
  absl::Status s = reader.ForEachEntry(
      item, path,
      {"name", "api_key_sha256", "api_key_file", "api_key_env", "mtls_identity",
       "tenants", "admin"},
      [&](const std::string& key, const YAML::Node& key_node,
          const YAML::Node& value) -> absl::Status {
        const std::string field = absl::StrCat(path, ".", key);
        if (key == "admin") {
          absl::StatusOr<bool> b = reader.GetBool(value, field);
          if (!b.ok()) return b.status();
          caller->admin = *b;
          return absl::OkStatus();
        }
        if (key == "tenants") {
          tenants_node = value;
          return absl::OkStatus();  // checked below, with the tenants known
        }
        absl::StatusOr<std::string> text = reader.GetString(value, field);
        if (!text.ok()) return text.status();
        if (key == "name") {
          name_node = value;
          caller->name = *text;
          bool ok = !text->empty() && text->size() <= kMaxCallerNameBytes;
          for (char c : *text) ok = ok && IsCallerNameChar(c);
          if (!ok) {
            return reader.Error(
                value, field,
                absl::StrCat("caller name ", QuoteYamlValue(*text), " must be 1..",
                             kMaxCallerNameBytes, " characters of [a-zA-Z0-9_.-]"));
          }
          return absl::OkStatus();
        }
        credentials.push_back(key);
        if (credentials.size() > 1) {
          return reader.Error(key_node, field,
                              absl::StrCat("a caller has exactly one credential (also "
                                           "given: ",
                                           credentials.front(), ")"));
        }
        absl::StatusOr<std::string> digest;
        if (key == "api_key_sha256") {
          digest = ParseHexDigest(reader, value, field, *text);
        } else if (key == "api_key_file") {
          digest = ReadKeyFile(reader, value, field, *text);
        } else if (key == "api_key_env") {
          digest = ReadKeyEnv(reader, value, field, *text);
        } else {  // mtls_identity
          if (text->empty() || text->size() > kMaxMtlsIdentityBytes) {
            return reader.Error(value, field,
                                absl::StrCat("must be 1..", kMaxMtlsIdentityBytes,
                                             " bytes (a certificate subject CN or URI "
                                             "SAN)"));
          }
          if (auto c = FindControlCharacter(*text)) {
            return reader.Error(value, field, "must not contain control characters");
          }
          if (!config.tls.has_value() || config.tls->client_ca_file.empty()) {
            return reader.Error(value, field,
                                "needs tls.client_ca_file: only a client certificate "
                                "verified against it identifies a caller");
          }
          caller->mtls_identity = *text;
          return absl::OkStatus();
        }
        if (!digest.ok()) return digest.status();
        caller->api_key_digest = *std::move(digest);
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  if (!name_node) return reader.Error(item, path, "missing required key 'name'");
  if (credentials.empty()) {
    return reader.Error(item, path,
                        "missing a credential: one of api_key_sha256, api_key_file, "
                        "api_key_env, mtls_identity");
  }
  if (!tenants_node) {
    return reader.Error(item, path,
                        "missing required key 'tenants' (a list of tenant names, or "
                        "\"*\")");
  }
  const std::string tenants_path = absl::StrCat(path, ".tenants");
  if (tenants_node->IsScalar()) {
    if (tenants_node->Scalar() != "*") {
      return reader.Error(*tenants_node, tenants_path,
                          absl::StrCat("expected a list of tenant names or \"*\", got ",
                                       DescribeYamlNode(*tenants_node)));
    }
    caller->all_tenants = true;
    return absl::OkStatus();
  }
  if (!tenants_node->IsSequence()) {
    return reader.Error(*tenants_node, tenants_path,
                        absl::StrCat("expected a list of tenant names or \"*\", got ",
                                     DescribeYamlNode(*tenants_node)));
  }
  for (size_t i = 0; i < tenants_node->size(); ++i) {
    const YAML::Node t = (*tenants_node)[i];
    const std::string t_path = absl::StrCat(tenants_path, "[", i, "]");
    absl::StatusOr<std::string> name = reader.GetString(t, t_path);
    if (!name.ok()) return name.status();
    bool known = false;
    for (const TenantConfig& tenant : config.tenants)
      known = known || tenant.name == *name;
    if (!known) {
      std::vector<std::string> names;
      for (const TenantConfig& tenant : config.tenants) names.push_back(tenant.name);
      return reader.Error(
          t, t_path,
          absl::StrCat("unknown tenant ", QuoteYamlValue(*name),
                       " (defined tenants: ", absl::StrJoin(names, ", "), ")"));
    }
    for (const std::string& seen : caller->tenants) {
      if (seen == *name) {
        return reader.Error(t, t_path,
                            absl::StrCat("duplicate tenant ", QuoteYamlValue(*name)));
      }
    }
    caller->tenants.push_back(*name);
  }
  return absl::OkStatus();
}

}  // namespace

std::string Sha256Digest(std::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

absl::StatusOr<AuthMode> ParseAuthMode(const YamlReader& reader, const YAML::Node& node) {
  absl::StatusOr<std::string> text = reader.GetString(node, "auth");
  if (!text.ok()) return text.status();
  if (*text == "off") return AuthMode::kOff;
  if (*text == "required") return AuthMode::kRequired;
  return reader.Error(
      node, "auth",
      absl::StrCat("expected off or required, got ", QuoteYamlValue(*text)));
}

absl::Status ParseCallers(const YamlReader& reader, const YAML::Node& node,
                          Config* config) {
  if (!node.IsSequence()) {
    return reader.Error(node, "callers",
                        absl::StrCat("expected a list, got ", DescribeYamlNode(node)));
  }
  std::vector<std::string> paths;
  for (size_t i = 0; i < node.size(); ++i) {
    const YAML::Node item = node[i];
    const std::string path = absl::StrCat("callers[", i, "]");
    CallerConfig caller;
    if (absl::Status s = ParseCaller(reader, item, path, *config, &caller); !s.ok()) {
      return s;
    }
    for (size_t j = 0; j < config->callers.size(); ++j) {
      const CallerConfig& other = config->callers[j];
      std::string problem;
      if (other.name == caller.name) {
        problem = absl::StrCat("duplicate caller name ", QuoteYamlValue(caller.name));
      } else if (!caller.api_key_digest.empty() &&
                 other.api_key_digest == caller.api_key_digest) {
        problem = "the same API key as another caller";
      } else if (!caller.mtls_identity.empty() &&
                 other.mtls_identity == caller.mtls_identity) {
        problem = absl::StrCat("duplicate mtls_identity ",
                               QuoteYamlValue(caller.mtls_identity));
      }
      if (!problem.empty()) {
        return reader.Error(item, path,
                            absl::StrCat(problem, " (", paths[j], ", caller ",
                                         QuoteYamlValue(other.name), ")"));
      }
    }
    config->callers.push_back(std::move(caller));
    paths.push_back(path);
  }
  return absl::OkStatus();
}

absl::Status CheckAuthHasCallers(const YamlReader& reader, const YAML::Node& auth_node,
                                 const Config& config) {
  if (config.auth == AuthMode::kRequired && config.callers.empty()) {
    return reader.Error(auth_node, "auth",
                        "auth: required needs at least one entry in callers");
  }
  return absl::OkStatus();
}

}  // namespace traffik

#include "auth/caller_table.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cstdint>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/quote.h"
#include "config/callers_config.h"

namespace traffik {
namespace {

// The key of an `authorization` value "Bearer <key>", or "" if the value has
// another form (scheme, separator, length or bytes).
absl::string_view BearerKey(absl::string_view value) {
  constexpr size_t kScheme = sizeof(kBearerScheme) - 1;
  if (value.size() <= kScheme + 1 || value.size() > kScheme + 1 + kMaxApiKeyBytes) {
    return "";
  }
  if (!absl::EqualsIgnoreCase(value.substr(0, kScheme), kBearerScheme) ||
      value[kScheme] != ' ') {
    return "";
  }
  absl::string_view key = value.substr(kScheme + 1);
  for (unsigned char c : key) {
    if (c <= 0x20 || c >= 0x7f) return "";
  }
  return key;
}

}  // namespace

CallerTable::CallerTable(const Config& config, Metrics* metrics)
    : required_(config.auth == AuthMode::kRequired),
      client_certs_verified_(config.tls.has_value() &&
                             !config.tls->client_ca_file.empty()),
      default_tenant_(config.default_tenant) {
  callers_.reserve(config.callers.size());
  for (const CallerConfig& c : config.callers) {
    Caller caller;
    caller.name = c.name;
    caller.all_tenants = c.all_tenants;
    caller.tenants.insert(c.tenants.begin(), c.tenants.end());
    caller.admin = c.admin;
    if (metrics != nullptr) caller.requests = metrics->ForCaller(c.name);
    const size_t index = callers_.size();
    if (!c.api_key_digest.empty()) {
      digests_.push_back(c.api_key_digest);
      digest_callers_.push_back(index);
    } else {
      identities_.emplace(c.mtls_identity, index);
    }
    callers_.push_back(std::move(caller));
  }
}

absl::StatusOr<const Caller*> CallerTable::Authenticate(
    const PresentedCredentials& credentials, AuthFailure* failure) const {
  if (credentials.authorization_count > 0) {
    const absl::string_view key =
        credentials.authorization_count == 1 ? BearerKey(credentials.authorization) : "";
    if (!key.empty()) {
      unsigned char digest[SHA256_DIGEST_LENGTH];
      SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), digest);
      // Every configured digest is compared, whether or not one matched
      // already: the time taken does not depend on which (if any) matches.
      size_t found = 0;  // index + 1 of the match; digests are unique
      for (size_t i = 0; i < digests_.size(); ++i) {
        const size_t equal = static_cast<size_t>(
            CRYPTO_memcmp(digests_[i].data(), digest, sizeof(digest)) == 0);
        found |= (0 - equal) & (i + 1);
      }
      OPENSSL_cleanse(digest, sizeof(digest));
      if (found != 0) return &callers_[digest_callers_[found - 1]];
    }
    *failure = AuthFailure::kUnknownCredential;
    return absl::UnauthenticatedError(
        "unknown credential: the authorization metadata is not \"Bearer <key>\" with a "
        "configured API key");
  }
  if (client_certs_verified_ && !credentials.peer_identities.empty()) {
    for (const std::string& identity : credentials.peer_identities) {
      auto it = identities_.find(identity);
      if (it != identities_.end()) return &callers_[it->second];
    }
    *failure = AuthFailure::kUnknownCredential;
    return absl::UnauthenticatedError(
        "unknown credential: the client certificate names no configured caller");
  }
  *failure = AuthFailure::kMissingCredential;
  return absl::UnauthenticatedError(
      "missing credential: send \"authorization: Bearer <key>\" metadata or a client "
      "certificate");
}

absl::string_view CallerTable::ResolveTenant(absl::string_view tenant) const {
  return tenant.empty() ? absl::string_view(default_tenant_) : tenant;
}

absl::Status CallerTable::CheckTenant(const Caller& caller,
                                      absl::string_view tenant) const {
  if (caller.all_tenants) return absl::OkStatus();
  const absl::string_view name = ResolveTenant(tenant);
  if (caller.tenants.contains(name)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "caller '", caller.name, "' may not use tenant ", QuoteForMessage(name)));
}

}  // namespace traffik

#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "config/config.h"
#include "metrics/metrics.h"

namespace traffik {

// One configured caller as the checks need it.
struct Caller {
  std::string name;
  bool all_tenants = false;
  absl::flat_hash_set<std::string> tenants;
  bool admin = false;
  prometheus::Counter* requests = nullptr;  // traffik_caller_requests_total{caller}
};

// What a call presented, taken from the transport (auth/grpc_auth.h).
struct PresentedCredentials {
  // How many `authorization` metadata entries the call carried, and the first.
  size_t authorization_count = 0;
  absl::string_view authorization;
  // The identities of a verified client certificate, in the order they are
  // tried: its URI SANs (e.g. SPIFFE IDs), then its subject CN. Empty without
  // a verified client certificate.
  std::vector<std::string> peer_identities;
};

// The callers of one configuration (`auth`, `callers`), immutable: built with
// each engine Snapshot, so a reload swaps them with the tenants atomically.
//
// Authentication: an `authorization` entry decides alone when present (it
// must be exactly one "Bearer <key>" whose SHA-256 is a configured digest);
// otherwise a verified client certificate's identity; otherwise the call has
// no credential. Keys are compared as digests in constant time over all the
// configured digests (CRYPTO_memcmp, no early exit). No message or log line
// ever holds a key.
//
// Thread-safe (immutable).
class CallerTable {
 public:
  // `metrics` gets one traffik_caller_requests_total series per caller.
  CallerTable(const Config& config, Metrics* metrics);
  CallerTable(const CallerTable&) = delete;
  CallerTable& operator=(const CallerTable&) = delete;

  // `auth: required`. When false every check below is skipped by callers.
  bool required() const { return required_; }

  // The caller presenting `credentials`, or kUnauthenticated with `*failure`
  // set (missing or unknown credential).
  absl::StatusOr<const Caller*> Authenticate(const PresentedCredentials& credentials,
                                             AuthFailure* failure) const;

  // The name `tenant` resolves to (the default tenant for "").
  absl::string_view ResolveTenant(absl::string_view tenant) const;

  // OK if `caller` may use `tenant` (resolved as ResolveTenant; an unknown
  // tenant is never granted unless the caller has "*"), else
  // kPermissionDenied naming the caller and the quoted, truncated tenant.
  absl::Status CheckTenant(const Caller& caller, absl::string_view tenant) const;

  size_t size() const { return callers_.size(); }
  // How many callers have an mtls_identity that counts (tls.client_ca_file
  // set).
  size_t identity_callers() const {
    return client_certs_verified_ ? identities_.size() : 0;
  }

 private:
  const bool required_;
  // tls.client_ca_file is set: the server verifies every client certificate
  // it accepts (app/tls.cc never asks for one without verifying it), so a
  // certificate's identities can be trusted. Otherwise they are ignored.
  const bool client_certs_verified_;
  const std::string default_tenant_;
  std::vector<Caller> callers_;
  // Parallel: digest_callers_[i] owns digests_[i] (32 bytes each).
  std::vector<std::string> digests_;
  std::vector<size_t> digest_callers_;
  absl::flat_hash_map<std::string, size_t> identities_;  // mtls_identity -> caller
};

// The scheme of an `authorization` value carrying an API key
// (case-insensitive, followed by one space).
inline constexpr char kBearerScheme[] = "Bearer";

}  // namespace traffik

#pragma once

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "auth/caller_table.h"
#include "grpcpp/server_context.h"
#include "metrics/metrics.h"

namespace traffik {

// The credentials a gRPC call presented: its `authorization` metadata and,
// over TLS with a verified client certificate, the certificate's URI SANs and
// subject CN (grpc::AuthContext properties peer_uri and x509_common_name).
// Views into `context`: valid while the call is.
//
// A certificate counts only when gRPC authenticated the peer
// (AuthContext::IsPeerAuthenticated over "ssl" or "tls"), and CallerTable
// uses it only with tls.client_ca_file set. That relies on the server
// verifying every client certificate it accepts: app/tls.cc asks for one only
// with client_ca_file, always with *_AND_VERIFY (gRPC's *_BUT_DONT_VERIFY
// modes would hand over an unverified certificate's identities as
// authenticated: never use them with mtls_identity callers).
// With `identities` false the certificate is not looked at (no AuthContext is
// built): for a caller table without mtls_identity callers.
PresentedCredentials CredentialsOf(const grpc::ServerContextBase& context,
                                   bool identities = true);

// What a call wants to do, for AuthorizeCall.
struct CallAccess {
  absl::string_view rpc;  // for the log line, e.g. "ShouldThrottle"
  bool admin = false;     // an AdminService call: admin callers only
  // The tenants the call touches ("" = the default tenant).
  std::vector<absl::string_view> tenants;
  // A batch: a refused tenant's message names "requests[i]: ".
  bool batch = false;
};

// The auth check of one call, before any bucket is touched. OK when
// `table.required()` is false (auth: off ignores any credential) or when the
// call's caller may do `access`; else kUnauthenticated (no or unknown
// credential) or kPermissionDenied (tenant not granted, not an admin). A
// refusal is counted in traffik_auth_failures_total{reason} and logged
// (rate-limited: callers trigger it); an accepted call is counted in
// traffik_caller_requests_total{caller}. Messages name the caller and the
// quoted, truncated tenant, never a key.
absl::Status AuthorizeCall(const CallerTable& table,
                           const grpc::ServerContextBase& context,
                           const CallAccess& access, Metrics& metrics);

}  // namespace traffik

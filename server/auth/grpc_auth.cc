#include "auth/grpc_auth.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "base/quote.h"
#include "grpc/grpc_security_constants.h"
#include "grpcpp/security/auth_context.h"

namespace traffik {
namespace {

constexpr char kAuthorizationKey[] = "authorization";

absl::string_view View(const grpc::string_ref& s) {
  return absl::string_view(s.data(), s.size());
}

void Refuse(const grpc::ServerContextBase& context, const CallAccess& access,
            AuthFailure failure, const absl::Status& status, Metrics& metrics) {
  metrics.CountAuthFailure(failure);
  // The peer is gRPC's "ipv4:1.2.3.4:5678" form; the message holds no key.
  TRAFFIK_LOG_LIMITED(absl::StrCat("auth: ", access.rpc, " from ",
                                   QuoteForMessage(context.peer()), " refused (",
                                   AuthFailureName(failure), "): ", status.message()));
}

}  // namespace

PresentedCredentials CredentialsOf(const grpc::ServerContextBase& context,
                                   bool identities) {
  PresentedCredentials credentials;
  const auto& metadata = context.client_metadata();
  auto [begin, end] = metadata.equal_range(kAuthorizationKey);
  for (auto it = begin; it != end; ++it) {
    if (credentials.authorization_count++ == 0)
      credentials.authorization = View(it->second);
  }
  // A key decides alone (CallerTable::Authenticate): no certificate needed.
  if (!identities || credentials.authorization_count > 0) return credentials;
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return credentials;
  bool ssl = false;
  for (const grpc::string_ref& type :
       auth->FindPropertyValues(GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME)) {
    // "ssl": grpc::SslServerCredentials; "tls": the TlsServerCredentials
    // (certificate provider) traffikd's tls: uses (app/tls.cc).
    ssl = ssl || View(type) == GRPC_SSL_TRANSPORT_SECURITY_TYPE ||
          View(type) == GRPC_TLS_TRANSPORT_SECURITY_TYPE;
  }
  if (!ssl) return credentials;
  for (const grpc::string_ref& uri :
       auth->FindPropertyValues(GRPC_PEER_URI_PROPERTY_NAME)) {
    credentials.peer_identities.emplace_back(uri.data(), uri.size());
  }
  for (const grpc::string_ref& cn :
       auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME)) {
    credentials.peer_identities.emplace_back(cn.data(), cn.size());
  }
  return credentials;
}

absl::Status AuthorizeCall(const CallerTable& table,
                           const grpc::ServerContextBase& context,
                           const CallAccess& access, Metrics& metrics) {
  if (!table.required()) return absl::OkStatus();
  AuthFailure failure = AuthFailure::kMissingCredential;
  absl::StatusOr<const Caller*> caller =
      table.Authenticate(CredentialsOf(context, table.identity_callers() > 0), &failure);
  if (!caller.ok()) {
    Refuse(context, access, failure, caller.status(), metrics);
    return caller.status();
  }
  if ((*caller)->requests != nullptr) (*caller)->requests->Increment();
  if (access.admin && !(*caller)->admin) {
    absl::Status s = absl::PermissionDeniedError(
        absl::StrCat("caller '", (*caller)->name, "' is not an admin caller"));
    Refuse(context, access, AuthFailure::kNotAdmin, s, metrics);
    return s;
  }
  for (size_t i = 0; i < access.tenants.size(); ++i) {
    if (absl::Status s = table.CheckTenant(**caller, access.tenants[i]); !s.ok()) {
      if (access.batch) {
        s = absl::PermissionDeniedError(absl::StrCat("requests[", i, "]: ", s.message()));
      }
      Refuse(context, access, AuthFailure::kTenantNotGranted, s, metrics);
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace traffik

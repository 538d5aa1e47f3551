#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "config/config.h"
#include "metrics/metrics.h"

namespace grpc {
class ServerCredentials;
namespace experimental {
class CertificateProviderInterface;
}  // namespace experimental
}  // namespace grpc

namespace traffik {

// How often the certificate, key and client CA files are looked at again, by
// TlsCertificateWatch and then by gRPC's watcher of its copies: a rotation is
// served to new connections within about twice this, well inside 10 s.
inline constexpr std::chrono::seconds kTlsRefreshInterval{1};

// What a PEM certificate chain + private key pair says, once checked.
struct CertificateInfo {
  std::string serial;     // the leaf's serial, upper-case hex
  std::string subject;    // the leaf's subject, one line (RFC 2253)
  std::string not_after;  // the leaf's expiry, e.g. "Dec  3 15:00:00 2026 GMT"
};

// Checks a pair with OpenSSL: every certificate of the chain parses (at least
// one), the key parses, and the key belongs to the first (leaf) certificate.
// kInvalidArgument naming the problem otherwise (never the key's bytes).
absl::StatusOr<CertificateInfo> CheckKeyCertPair(absl::string_view cert_pem,
                                                 absl::string_view key_pem);
// Checks a CA bundle: at least one certificate, each parses.
absl::Status CheckCaBundle(absl::string_view ca_pem);

// Reads `tls`'s files and checks them (CheckKeyCertPair, CheckCaBundle);
// errors name the field ("tls.key_file: ...").
absl::StatusOr<CertificateInfo> CheckTlsFiles(const TlsConfig& tls);

// True for hosts that only this machine reaches: 127.0.0.0/8, ::1 and
// "localhost". Anything else (0.0.0.0, ::, a name, a routable address) is not.
bool IsLoopbackHost(absl::string_view host);

// The one warning for a gRPC port on a non-loopback address without TLS;
// nullopt when `listen` is loopback or `tls` is set.
std::optional<std::string> PlaintextListenWarning(const Config& config);

// The gRPC port's certificate, key and client CA, checked before gRPC ever
// sees them. gRPC 1.51's FileWatcherCertificateProvider hands whatever the
// files hold to the TLS stack, and a broken pair (unparseable, or a key of
// another certificate) then fails every new handshake (tls_e2e_test shows
// it) instead of keeping the previous pair. So gRPC watches in-memory copies
// instead (memfd, /proc/self/fd/N: no key material written to disk): every
// `interval` the configured files are read; a change of their bytes is checked
// once (CheckKeyCertPair, CheckCaBundle) and gives one log line and one count
// of traffik_tls_certificate_reloads_total: "success" (the copy is replaced
// in one dup3(), so gRPC reads the old or the new pair, never half of each,
// and serves it to new connections within its own refresh interval) or
// "error" naming the problem (the copy, and so the served pair, stays). A
// pair read in the middle of a non-atomic copy is read again on the next
// round before anything is said. Open connections keep their session.
//
// Thread-safe. Destroy it after the gRPC server (it owns the copies).
class TlsCertificateWatch {
 public:
  using LogFn = std::function<void(const std::string&)>;

  // Checks the files now (an unusable pair is the error: startup fails), then
  // looks again every `interval` on a thread of its own.
  static absl::StatusOr<std::unique_ptr<TlsCertificateWatch>> Start(
      const TlsConfig& tls, Metrics& metrics, LogFn log,
      std::chrono::milliseconds interval = kTlsRefreshInterval);
  ~TlsCertificateWatch();
  TlsCertificateWatch(const TlsCertificateWatch&) = delete;
  TlsCertificateWatch& operator=(const TlsCertificateWatch&) = delete;

  // Server credentials serving the checked copies, asking for client
  // certificates as `tls` says: none without a client CA; verified when sent
  // with one; required with require_client_cert.
  std::shared_ptr<grpc::ServerCredentials> ServerCredentials();

  // One round (what the thread does each interval).
  void CheckNow();

  // The certificate served (last seen good).
  CertificateInfo served() const;

 private:
  TlsCertificateWatch(const TlsConfig& tls, Metrics& metrics, LogFn log)
      : tls_(tls), metrics_(metrics), log_(std::move(log)) {}
  void Run(std::chrono::milliseconds interval);
  // Reads the key and cert files twice; nullopt while they change.
  std::optional<absl::StatusOr<std::string>> ReadIdentity() const;

  const TlsConfig tls_;
  Metrics& metrics_;
  const LogFn log_;
  mutable absl::Mutex mu_;
  // SHA-256 of what was last looked at (bytes, or the read error).
  std::string seen_identity_ ABSL_GUARDED_BY(mu_);
  std::string seen_ca_ ABSL_GUARDED_BY(mu_);
  CertificateInfo served_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // The copies gRPC reads: key + certificate chain in one memfd (so one
  // dup3 swaps both), and the client CA bundle (-1 without one).
  int identity_fd_ = -1;
  int ca_fd_ = -1;
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider_;
  std::thread thread_;
};

}  // namespace traffik

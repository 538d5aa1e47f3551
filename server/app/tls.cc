#include "app/tls.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "app/sha256.h"
#include "base/host_port.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace traffik {
namespace {

// Certificates and keys are small; a bigger file is a mistake (or an attack
// on memory) and is refused.
constexpr size_t kMaxPemFileBytes = 1 << 20;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

BioPtr MemBio(absl::string_view pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// OpenSSL's reason for the last failure (its queue is then emptied).
std::string OpensslReason() {
  const unsigned long code = ERR_peek_last_error();
  std::string reason = code == 0                       ? "no PEM data"
                       : ERR_reason_error_string(code) ? ERR_reason_error_string(code)
                                                       : "unknown error";
  ERR_clear_error();
  return reason;
}

// Every PEM certificate in `pem` (at least one), or kInvalidArgument.
absl::StatusOr<std::vector<X509Ptr>> ParseCertificates(absl::string_view pem) {
  if (pem.size() > kMaxPemFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("larger than ", kMaxPemFileBytes, " bytes"));
  }
  ERR_clear_error();
  BioPtr bio = MemBio(pem);
  std::vector<X509Ptr> certs;
  while (true) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) break;
    certs.push_back(std::move(cert));
  }
  // The loop ends at the end of the data (PEM_R_NO_START_LINE) or at a
  // certificate that does not parse.
  const unsigned long last = ERR_peek_last_error();
  const bool clean_end = last == 0 || (ERR_GET_LIB(last) == ERR_LIB_PEM &&
                                       ERR_GET_REASON(last) == PEM_R_NO_START_LINE);
  if (!clean_end) {
    return absl::InvalidArgumentError(absl::StrCat("certificate ", certs.size() + 1,
                                                   " does not parse: ", OpensslReason()));
  }
  ERR_clear_error();
  if (certs.empty()) return absl::InvalidArgumentError("no PEM certificate in it");
  return certs;
}

absl::StatusOr<std::string> ReadPemFile(const std::string& field,
                                        const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(field, ": cannot read '", path, "'"));
  std::string text;
  text.resize(kMaxPemFileBytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxPemFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": '", path, "' is larger than ", kMaxPemFileBytes, " bytes"));
  }
  return text;
}

std::string Serial(X509* cert) {
  const ASN1_INTEGER* serial = X509_get0_serialNumber(cert);
  BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
  if (bn == nullptr) return "?";
  char* hex = BN_bn2hex(bn);
  std::string out = hex != nullptr ? hex : "?";
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

std::string Subject(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0,
                     XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  std::string out(data, static_cast<size_t>(n > 0 ? n : 0));
  // The file is the operator's, still: keep the line one printable line.
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f)
      c = '?';
  }
  return out.substr(0, 256);
}

std::string NotAfter(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  ASN1_TIME_print(bio.get(), X509_get0_notAfter(cert));
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n > 0 ? n : 0));
}

}  // namespace

absl::StatusOr<CertificateInfo> CheckKeyCertPair(absl::string_view cert_pem,
                                                 absl::string_view key_pem) {
  absl::StatusOr<std::vector<X509Ptr>> certs = ParseCertificates(cert_pem);
  if (!certs.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate: ", certs.status().message()));
  }
  if (key_pem.size() > kMaxPemFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("key: larger than ", kMaxPemFileBytes, " bytes"));
  }
  ERR_clear_error();
  BioPtr bio = MemBio(key_pem);
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("key: does not parse: ", OpensslReason()));
  }
  X509* leaf = (*certs)[0].get();
  if (X509_check_private_key(leaf, key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("the key does not belong to the certificate");
  }
  return CertificateInfo{Serial(leaf), Subject(leaf), NotAfter(leaf)};
}

absl::Status CheckCaBundle(absl::string_view ca_pem) {
  absl::StatusOr<std::vector<X509Ptr>> certs = ParseCertificates(ca_pem);
  return certs.ok() ? absl::OkStatus() : certs.status();
}

absl::StatusOr<CertificateInfo> CheckTlsFiles(const TlsConfig& tls) {
  absl::StatusOr<std::string> cert = ReadPemFile("tls.cert_file", tls.cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPemFile("tls.key_file", tls.key_file);
  if (!key.ok()) return key.status();
  absl::StatusOr<CertificateInfo> info = CheckKeyCertPair(*cert, *key);
  if (!info.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tls.cert_file/tls.key_file ('",
                                                   tls.cert_file, "', '", tls.key_file,
                                                   "'): ", info.status().message()));
  }
  if (!tls.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadPemFile("tls.client_ca_file", tls.client_ca_file);
    if (!ca.ok()) return ca.status();
    if (absl::Status s = CheckCaBundle(*ca); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tls.client_ca_file ('", tls.client_ca_file, "'): ", s.message()));
    }
  }
  return info;
}

bool IsLoopbackHost(absl::string_view host) {
  if (absl::AsciiStrToLower(host) == "localhost" || host == "::1") return true;
  // 127.0.0.0/8, dotted quad only.
  std::vector<absl::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t dot = host.find('.', start);
    parts.push_back(
        host.substr(start, dot == absl::string_view::npos ? dot : dot - start));
    if (dot == absl::string_view::npos) break;
    start = dot + 1;
  }
  if (parts.size() != 4) return false;
  for (absl::string_view part : parts) {
    int value = 0;
    if (part.empty() || part.size() > 3 || !absl::SimpleAtoi(part, &value) ||
        value > 255 || !absl::ascii_isdigit(static_cast<unsigned char>(part[0]))) {
      return false;
    }
  }
  return parts[0] == "127";
}

std::optional<std::string> PlaintextListenWarning(const Config& config) {
  if (config.tls.has_value()) return std::nullopt;
  const HostPort address = SplitHostPort(config.listen, /*port_required=*/true);
  if (address.ok() && IsLoopbackHost(address.host)) return std::nullopt;
  return absl::StrCat("WARNING: gRPC listens on ", config.listen,
                      " (not loopback) without TLS: anyone who reaches it can read and "
                      "send traffic in clear text; set tls: in the config");
}

namespace {

// A sealed-size in-memory file holding `contents`, close-on-exec; -1 and
// errno on failure.
int MemoryFile(const std::string& name, const std::string& contents) {
  const int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) return -1;
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = write(fd, contents.data() + written, contents.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      close(fd);
      errno = err;
      return -1;
    }
    written += static_cast<size_t>(n);
  }
  return fd;
}

// Makes `target` (an fd number gRPC reads through /proc/self/fd) refer to a
// new memory file holding `contents`, in one step. The first call creates it.
absl::Status ReplaceMemoryFile(const std::string& name, const std::string& contents,
                               int* target) {
  const int fd = MemoryFile(name, contents);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("memfd_create: ", std::strerror(errno)));
  }
  if (*target < 0) {
    *target = fd;
    return absl::OkStatus();
  }
  const int result = dup3(fd, *target, O_CLOEXEC);
  const int err = errno;
  close(fd);
  if (result < 0) return absl::InternalError(absl::StrCat("dup3: ", std::strerror(err)));
  return absl::OkStatus();
}

std::string FdPath(int fd) { return absl::StrCat("/proc/self/fd/", fd); }

}  // namespace

absl::StatusOr<std::unique_ptr<TlsCertificateWatch>> TlsCertificateWatch::Start(
    const TlsConfig& tls, Metrics& metrics, LogFn log,
    std::chrono::milliseconds interval) {
  absl::StatusOr<CertificateInfo> info = CheckTlsFiles(tls);
  if (!info.ok()) return info.status();
  std::unique_ptr<TlsCertificateWatch> watch(
      new TlsCertificateWatch(tls, metrics, std::move(log)));
  std::optional<absl::StatusOr<std::string>> identity = watch->ReadIdentity();
  if (!identity.has_value()) {
    return absl::UnavailableError(
        "tls.cert_file/tls.key_file changed while being read; try again");
  }
  if (!identity->ok()) return identity->status();
  absl::StatusOr<CertificateInfo> checked = CheckKeyCertPair(**identity, **identity);
  if (!checked.ok()) return checked.status();  // replaced between the two reads
  {
    absl::MutexLock lock(&watch->mu_);
    watch->served_ = *checked;
    watch->seen_identity_ = Sha256Hex(**identity);
    if (absl::Status s =
            ReplaceMemoryFile("traffik-tls-identity", **identity, &watch->identity_fd_);
        !s.ok()) {
      return s;
    }
    if (!tls.client_ca_file.empty()) {
      absl::StatusOr<std::string> ca =
          ReadPemFile("tls.client_ca_file", tls.client_ca_file);
      if (!ca.ok()) return ca.status();
      if (absl::Status c = CheckCaBundle(*ca); !c.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tls.client_ca_file ('", tls.client_ca_file, "'): ", c.message()));
      }
      watch->seen_ca_ = Sha256Hex(*ca);
      if (absl::Status s =
              ReplaceMemoryFile("traffik-tls-client-ca", *ca, &watch->ca_fd_);
          !s.ok()) {
        return s;
      }
    }
  }
  watch->thread_ = std::thread([w = watch.get(), interval] { w->Run(interval); });
  return watch;
}

std::shared_ptr<grpc::ServerCredentials> TlsCertificateWatch::ServerCredentials() {
  const std::string identity = FdPath(identity_fd_);
  provider_ = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      identity, identity, ca_fd_ >= 0 ? FdPath(ca_fd_) : std::string(),
      static_cast<unsigned int>(kTlsRefreshInterval.count()));
  grpc::experimental::TlsServerCredentialsOptions options(provider_);
  options.watch_identity_key_cert_pairs();
  if (ca_fd_ < 0) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(
        tls_.require_client_cert
            ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
            : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

TlsCertificateWatch::~TlsCertificateWatch() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
  provider_.reset();
  if (identity_fd_ >= 0) close(identity_fd_);
  if (ca_fd_ >= 0) close(ca_fd_);
}

CertificateInfo TlsCertificateWatch::served() const {
  absl::MutexLock lock(&mu_);
  return served_;
}

void TlsCertificateWatch::Run(std::chrono::milliseconds interval) {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      const absl::Duration wait = absl::Milliseconds(interval.count());
      auto stopped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopped), wait)) return;
    }
    CheckNow();
  }
}

std::optional<absl::StatusOr<std::string>> TlsCertificateWatch::ReadIdentity() const {
  // Read twice: a pair that changes between the reads is being replaced
  // right now (a copy, not a symlink swap); look again next round.
  absl::StatusOr<std::string> key = ReadPemFile("tls.key_file", tls_.key_file);
  absl::StatusOr<std::string> cert = ReadPemFile("tls.cert_file", tls_.cert_file);
  if (!key.ok()) return absl::StatusOr<std::string>(key.status());
  if (!cert.ok()) return absl::StatusOr<std::string>(cert.status());
  absl::StatusOr<std::string> key_again = ReadPemFile("tls.key_file", tls_.key_file);
  absl::StatusOr<std::string> cert_again = ReadPemFile("tls.cert_file", tls_.cert_file);
  if (!key_again.ok() || !cert_again.ok() || *key_again != *key || *cert_again != *cert) {
    return std::nullopt;
  }
  // The key first, then the chain: OpenSSL's PEM readers skip the blocks of
  // the other kind, so gRPC reads the one copy as both.
  return absl::StatusOr<std::string>(absl::StrCat(*key, "\n", *cert));
}

void TlsCertificateWatch::CheckNow() {
  std::optional<absl::StatusOr<std::string>> identity = ReadIdentity();
  if (!identity.has_value()) return;  // changing right now
  std::optional<absl::StatusOr<std::string>> ca;
  if (!tls_.client_ca_file.empty()) {
    ca = ReadPemFile("tls.client_ca_file", tls_.client_ca_file);
  }
  absl::MutexLock lock(&mu_);
  const std::string identity_digest =
      Sha256Hex(identity->ok() ? **identity : identity->status().ToString());
  if (identity_digest != seen_identity_) {  // once per change
    seen_identity_ = identity_digest;
    absl::Status problem = identity->status();
    if (problem.ok()) {
      absl::StatusOr<CertificateInfo> info = CheckKeyCertPair(**identity, **identity);
      if (info.ok()) {
        problem = ReplaceMemoryFile("traffik-tls-identity", **identity, &identity_fd_);
        if (problem.ok()) {
          served_ = *info;
          metrics_.CountTlsCertificateReload(/*success=*/true);
          log_(absl::StrCat("TLS certificate reloaded: serial ", info->serial,
                            ", subject '", info->subject, "', expires ",
                            info->not_after));
        }
      } else {
        problem = absl::InvalidArgumentError(
            absl::StrCat("tls.cert_file/tls.key_file ('", tls_.cert_file, "', '",
                         tls_.key_file, "'): ", info.status().message()));
      }
    }
    if (!problem.ok()) {
      metrics_.CountTlsCertificateReload(/*success=*/false);
      log_(
          absl::StrCat("TLS certificate reload failed, the previous certificate (serial ",
                       served_.serial, ") keeps serving: ", problem.message()));
    }
  }
  if (ca.has_value()) {
    const std::string ca_digest = Sha256Hex(ca->ok() ? **ca : ca->status().ToString());
    if (ca_digest != seen_ca_) {
      seen_ca_ = ca_digest;
      absl::Status problem = ca->status();
      if (problem.ok()) {
        if (absl::Status c = CheckCaBundle(**ca); !c.ok()) {
          problem = absl::InvalidArgumentError(absl::StrCat(
              "tls.client_ca_file ('", tls_.client_ca_file, "'): ", c.message()));
        } else {
          problem = ReplaceMemoryFile("traffik-tls-client-ca", **ca, &ca_fd_);
        }
      }
      metrics_.CountTlsCertificateReload(problem.ok());
      log_(problem.ok()
               ? std::string("TLS client CA bundle reloaded")
               : absl::StrCat("TLS client CA reload failed, the previous bundle keeps "
                              "serving: ",
                              problem.message()));
    }
  }
}

}  // namespace traffik

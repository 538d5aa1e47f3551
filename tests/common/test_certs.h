#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace traffik::testing_support {

// A certificate file and the file of its private key (PEM).
struct CertKeyFiles {
  std::string cert_file;
  std::string key_file;
};

// What a certificate issued by TestCerts says about its holder.
struct CertSpec {
  // The subject CN.
  std::string common_name{};
  // Optional URI SAN (e.g. "spiffe://cluster.local/ns/a/sa/b"); empty for none.
  std::string uri_san{};
  // Server certificates: IP SAN 127.0.0.1 and DNS SAN localhost (plus
  // serverAuth); client certificates: clientAuth only.
  bool server = false;
  // Issued by the second, unrelated CA instead of the main one.
  bool other_ca = false;
};

// Throwaway certificates for TLS tests, made with the openssl CLI (EC P-256
// keys, so each is ready in milliseconds) in a fresh temp directory that the
// destructor removes. Create() makes:
//   - ca_file(): the main CA's certificate;
//   - server(): a server certificate for 127.0.0.1 / localhost (IP + DNS
//     SANs), CN "traffik-test-server", signed by the main CA;
//   - other_ca_file(): a second CA, unrelated to the first.
// Further certificates come from Issue() and MismatchedPair(). Every openssl
// run is bounded (10 s) and fails with its output in the message. Not
// thread-safe; one object per test.
class TestCerts {
 public:
  static absl::StatusOr<std::unique_ptr<TestCerts>> Create();

  TestCerts(const TestCerts&) = delete;
  TestCerts& operator=(const TestCerts&) = delete;
  ~TestCerts();

  const std::string& dir() const { return dir_; }
  const std::string& ca_file() const { return ca_.cert_file; }
  const std::string& other_ca_file() const { return other_ca_.cert_file; }
  const CertKeyFiles& server() const { return server_; }

  // Issues a certificate with a new key, named "<name>.crt" / "<name>.key" in
  // dir() (`name`: letters, digits, '-', '_' only). Each issued certificate
  // gets a distinct random serial.
  absl::StatusOr<CertKeyFiles> Issue(const std::string& name, const CertSpec& spec);

  // A certificate and a key that do not belong together: a valid server
  // certificate (as server()) with the key of another certificate.
  absl::StatusOr<CertKeyFiles> MismatchedPair(const std::string& name);

  // The serial number of a PEM certificate file, as openssl prints it (hex,
  // upper case), and its subject line ("CN = ..."): for checking which
  // certificate a server presented.
  static absl::StatusOr<std::string> Serial(const std::string& cert_file);

 private:
  explicit TestCerts(std::string dir) : dir_(std::move(dir)) {}

  absl::StatusOr<CertKeyFiles> MakeCa(const std::string& name, const std::string& cn);

  std::string dir_;
  CertKeyFiles ca_;
  CertKeyFiles other_ca_;
  CertKeyFiles server_;
};

// Runs the openssl CLI with `args`; returns its combined stdout/stderr, or an
// error (with that output) if it exits non-zero or runs longer than `timeout`.
absl::StatusOr<std::string> RunOpenssl(
    const std::vector<std::string>& args,
    std::chrono::milliseconds timeout = std::chrono::seconds(10));

// Reads a whole file.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

}  // namespace traffik::testing_support

#include "common/test_certs.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/spawn.h"

namespace traffik::testing_support {
namespace {

std::string OpensslBinary() {
  for (const char* candidate :
       {"/usr/bin/openssl", "/usr/local/bin/openssl", "/bin/openssl"}) {
    if (access(candidate, X_OK) == 0) return candidate;
  }
  return "/usr/bin/openssl";  // the error then names it
}

absl::Status WriteWholeFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// Names become file names and CNs become part of an openssl -subj argument:
// keep both to characters that need no escaping.
bool IsPlainName(const std::string& name, bool allow_dots_spaces) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')
      continue;
    if (allow_dots_spaces && (c == '.' || c == ' ' || c == ':' || c == '@')) continue;
    return false;
  }
  return true;
}

std::string RandomSerialHex() {
  std::random_device device;
  std::mt19937_64 generator((static_cast<uint64_t>(device()) << 32) ^ device());
  // 63 bits, top bit of the first byte clear (a positive INTEGER), never 0.
  const uint64_t value = (generator() >> 1) | 1;
  return absl::StrFormat("0x%016X", value);
}

}  // namespace

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<std::string> RunOpenssl(const std::vector<std::string>& args,
                                       std::chrono::milliseconds timeout) {
  char output_path[] = "/tmp/traffik-openssl-XXXXXX";
  const int fd = mkstemp(output_path);
  if (fd < 0) return absl::InternalError(absl::StrCat("mkstemp: ", std::strerror(errno)));
  const std::string binary = OpensslBinary();
  absl::StatusOr<pid_t> pid = SpawnChild(binary, args, fd);
  close(fd);
  if (!pid.ok()) {
    unlink(output_path);
    return pid.status();
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  bool exited = false;
  while (true) {
    const pid_t done = waitpid(*pid, &status, WNOHANG);
    if (done == *pid) {
      exited = true;
      break;
    }
    if (done < 0 && errno != EINTR) break;
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (!exited) {
    kill(*pid, SIGKILL);
    waitpid(*pid, &status, 0);
  }
  absl::StatusOr<std::string> output = ReadWholeFile(output_path);
  unlink(output_path);
  const std::string text = output.ok() ? *output : std::string("(no output)");
  std::string command = "openssl";
  for (const std::string& arg : args) absl::StrAppend(&command, " ", arg);
  if (!exited) {
    return absl::DeadlineExceededError(
        absl::StrCat(command, ": still running after ", timeout.count(), " ms: ", text));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(
        absl::StrCat(command, ": failed (status ", status, "): ", text));
  }
  return text;
}

absl::StatusOr<std::unique_ptr<TestCerts>> TestCerts::Create() {
  std::string pattern = "/tmp/traffik-certs-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", std::strerror(errno)));
  }
  std::unique_ptr<TestCerts> certs(new TestCerts(pattern));
  absl::StatusOr<CertKeyFiles> ca = certs->MakeCa("ca", "traffik-test-ca");
  if (!ca.ok()) return ca.status();
  certs->ca_ = *ca;
  absl::StatusOr<CertKeyFiles> other = certs->MakeCa("other-ca", "traffik-other-ca");
  if (!other.ok()) return other.status();
  certs->other_ca_ = *other;
  absl::StatusOr<CertKeyFiles> server = certs->Issue(
      "server", CertSpec{.common_name = "traffik-test-server", .server = true});
  if (!server.ok()) return server.status();
  certs->server_ = *server;
  return certs;
}

TestCerts::~TestCerts() {
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

absl::StatusOr<CertKeyFiles> TestCerts::MakeCa(const std::string& name,
                                               const std::string& cn) {
  const std::string base = absl::StrCat(dir_, "/", name);
  CertKeyFiles files{absl::StrCat(base, ".crt"), absl::StrCat(base, ".key")};
  const std::string config = absl::StrCat(base, ".cnf");
  absl::Status written = WriteWholeFile(
      config,
      "[req]\ndistinguished_name = dn\n[dn]\n"
      "[ca]\nbasicConstraints = critical,CA:TRUE\n"
      "keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n");
  if (!written.ok()) return written;
  absl::StatusOr<std::string> key =
      RunOpenssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-out", files.key_file});
  if (!key.ok()) return key.status();
  absl::StatusOr<std::string> cert =
      RunOpenssl({"req", "-x509", "-new", "-key", files.key_file, "-config", config,
                  "-extensions", "ca", "-subj", absl::StrCat("/CN=", cn), "-days", "2",
                  "-set_serial", RandomSerialHex(), "-out", files.cert_file});
  if (!cert.ok()) return cert.status();
  return files;
}

absl::StatusOr<CertKeyFiles> TestCerts::Issue(const std::string& name,
                                              const CertSpec& spec) {
  if (!IsPlainName(name, /*allow_dots_spaces=*/false)) {
    return absl::InvalidArgumentError(absl::StrCat("bad certificate file name: ", name));
  }
  if (!IsPlainName(spec.common_name, /*allow_dots_spaces=*/true)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad common name: ", spec.common_name));
  }
  if (spec.uri_san.find_first_of(",\n\r") != std::string::npos) {
    return absl::InvalidArgumentError("URI SAN with ',' or a newline");
  }
  const std::string base = absl::StrCat(dir_, "/", name);
  CertKeyFiles files{absl::StrCat(base, ".crt"), absl::StrCat(base, ".key")};
  const std::string csr = absl::StrCat(base, ".csr");
  const std::string ext = absl::StrCat(base, ".ext");
  std::string extensions = "[ext]\nbasicConstraints = CA:FALSE\n";
  std::vector<std::string> sans;
  if (spec.server) {
    absl::StrAppend(&extensions,
                    "keyUsage = critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage = serverAuth\n");
    sans = {"IP:127.0.0.1", "DNS:localhost"};
  } else {
    absl::StrAppend(&extensions,
                    "keyUsage = critical,digitalSignature\n"
                    "extendedKeyUsage = clientAuth\n");
  }
  if (!spec.uri_san.empty()) sans.push_back(absl::StrCat("URI:", spec.uri_san));
  if (!sans.empty()) {
    absl::StrAppend(&extensions, "subjectAltName = ");
    for (size_t i = 0; i < sans.size(); ++i) {
      absl::StrAppend(&extensions, i == 0 ? "" : ",", sans[i]);
    }
    absl::StrAppend(&extensions, "\n");
  }
  absl::Status written = WriteWholeFile(ext, extensions);
  if (!written.ok()) return written;
  const CertKeyFiles& issuer = spec.other_ca ? other_ca_ : ca_;
  absl::StatusOr<std::string> step =
      RunOpenssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-out", files.key_file});
  if (!step.ok()) return step.status();
  step = RunOpenssl({"req", "-new", "-key", files.key_file, "-config",
                     absl::StrCat(dir_, "/ca.cnf"), "-subj",
                     absl::StrCat("/CN=", spec.common_name), "-out", csr});
  if (!step.ok()) return step.status();
  step = RunOpenssl({"x509", "-req", "-in", csr, "-CA", issuer.cert_file, "-CAkey",
                     issuer.key_file, "-set_serial", RandomSerialHex(), "-days", "2",
                     "-extfile", ext, "-extensions", "ext", "-out", files.cert_file});
  if (!step.ok()) return step.status();
  return files;
}

absl::StatusOr<CertKeyFiles> TestCerts::MismatchedPair(const std::string& name) {
  absl::StatusOr<CertKeyFiles> first =
      Issue(absl::StrCat(name, "-cert"),
            CertSpec{.common_name = "traffik-mismatched", .server = true});
  if (!first.ok()) return first.status();
  absl::StatusOr<CertKeyFiles> second =
      Issue(absl::StrCat(name, "-key"), CertSpec{.common_name = "traffik-other-key"});
  if (!second.ok()) return second.status();
  return CertKeyFiles{first->cert_file, second->key_file};
}

absl::StatusOr<std::string> TestCerts::Serial(const std::string& cert_file) {
  absl::StatusOr<std::string> output =
      RunOpenssl({"x509", "-in", cert_file, "-noout", "-serial"});
  if (!output.ok()) return output.status();
  std::string text(absl::StripAsciiWhitespace(*output));
  if (!absl::StartsWith(text, "serial=")) {
    return absl::InternalError(absl::StrCat("unexpected openssl output: ", text));
  }
  return text.substr(7);
}

}  // namespace traffik::testing_support

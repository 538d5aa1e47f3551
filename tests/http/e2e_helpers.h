#pragma once

// Helpers for the web-app end-to-end tests: run an example app as a real
// process, make HTTP requests with libcurl, read traffikd's decision counter.

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace traffik::http_e2e {

// A running example app: fork/exec of `binary` with `args`, stdout and stderr
// appended to one temp file. Start() waits for "listening on HOST:PORT". The
// child gets SIGKILL if the test process dies; the destructor SIGKILLs and
// reaps it and removes the file. Not thread-safe.
class AppProcess {
 public:
  static absl::StatusOr<std::unique_ptr<AppProcess>> Start(
      const std::string& binary, const std::vector<std::string>& args,
      std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Starts an example app (`binary`) on 127.0.0.1:0 against traffikd at
  // `traffikd_address`, with `args` appended.
  static absl::StatusOr<std::unique_ptr<AppProcess>> StartExample(
      const std::string& binary, const std::string& traffikd_address,
      const std::vector<std::string>& args = {});

  AppProcess(const AppProcess&) = delete;
  AppProcess& operator=(const AppProcess&) = delete;
  ~AppProcess();

  int port() const { return port_; }
  std::string Output() const;

 private:
  AppProcess(pid_t pid, std::string output_path) : pid_(pid), output_path_(output_path) {}

  pid_t pid_;
  std::string output_path_;
  int port_ = 0;
};

// An HTTP response as libcurl received it.
struct CurlResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // lower-cased names; last value wins
  std::string body;
  std::chrono::milliseconds elapsed{0};

  // The header's value, or "" when absent.
  std::string Header(const std::string& lower_name) const;
};

// `method` http://127.0.0.1:<port><path> with extra request `headers`
// ("Name: value") and, for POST/PUT, `body`; a fresh connection each time, 5 s
// timeout. `path` is sent as given (no dot-segment squashing).
absl::StatusOr<CurlResponse> Curl(int port, const std::string& path,
                                  const std::vector<std::string>& headers = {},
                                  const std::string& method = "GET",
                                  const std::string& body = "");

// The sum of traffikd's traffik_decisions_total over all label sets, read from
// its /metrics on `metrics_port`.
absl::StatusOr<double> DecisionsTotal(int metrics_port);

// A loopback TCP port that nothing listens on (bound, then closed).
int UnusedPort();

}  // namespace traffik::http_e2e

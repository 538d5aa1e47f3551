#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace traffik::e2e {

// Path of the traffikd binary under test (TRAFFIKD_PATH, set by the build).
const char* TraffikdPath();

// A file under the temp directory, removed when this object is destroyed.
// Move-only.
class TempFile {
 public:
  // Creates a new file named like "<stem>-XXXXXX<suffix>" holding `contents`.
  static absl::StatusOr<TempFile> Create(const std::string& contents,
                                         const std::string& suffix = ".yaml",
                                         const std::string& stem = "traffik-e2e");

  TempFile(TempFile&& other) noexcept;
  TempFile& operator=(TempFile&& other) noexcept;
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile();

  const std::string& path() const { return path_; }

 private:
  explicit TempFile(std::string path) : path_(std::move(path)) {}

  std::string path_;  // empty once moved from
};

// A running traffikd started by the test: fork/exec of TraffikdPath() with the
// given arguments, stdin from /dev/null, stdout and stderr both appended to one
// temp file. The child gets SIGKILL if the test process dies. The destructor
// SIGKILLs and reaps the process if it is still running, and removes the file.
// Not thread-safe: use one object from one thread (the main test thread, which
// must outlive the child; see PR_SET_PDEATHSIG).
class TraffikdProcess {
 public:
  // Starts traffikd with `args` (argv[1..]) and waits at most `timeout` for the
  // startup line "traffikd: listening grpc=HOST:PORT metrics=HOST:PORT|off".
  // Fails (with the process output in the message) if the process exits or the
  // line does not appear in time; the process is killed in that case.
  static absl::StatusOr<std::unique_ptr<TraffikdProcess>> Start(
      const std::vector<std::string>& args,
      std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Starts traffikd without waiting for anything (for processes expected to
  // exit on their own).
  static absl::StatusOr<std::unique_ptr<TraffikdProcess>> Spawn(
      const std::vector<std::string>& args);

  TraffikdProcess(const TraffikdProcess&) = delete;
  TraffikdProcess& operator=(const TraffikdProcess&) = delete;
  ~TraffikdProcess();

  pid_t pid() const { return pid_; }
  // The ports from the startup line (valid after Start); metrics_port() is 0
  // when metrics are off.
  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  // "127.0.0.1:<grpc_port>".
  std::string grpc_address() const;

  // Sends `signal` to the process. False if it has already been reaped or
  // kill(2) fails.
  bool SendSignal(int signal);

  // Waits at most `timeout` for the process to exit and reaps it. Returns its
  // exit code, or 128 + the signal number if a signal killed it; nullopt if it
  // is still running after `timeout`. Once reaped, returns the same value
  // immediately.
  std::optional<int> WaitExit(std::chrono::milliseconds timeout);

  // True while the process has not been reaped and has not exited (reaps it if
  // it has exited).
  bool IsRunning();

  // Everything the process wrote so far to stderr and stdout (one file, so the
  // two streams are interleaved in write order).
  std::string StderrText() const;

  // Waits at most `timeout` until StderrText() contains `needle`.
  bool WaitForStderr(const std::string& needle, std::chrono::milliseconds timeout) const;

 private:
  TraffikdProcess(pid_t pid, std::string output_path)
      : pid_(pid), output_path_(std::move(output_path)) {}

  pid_t pid_;
  std::string output_path_;
  std::optional<int> exit_status_;  // set once reaped
  int grpc_port_ = 0;
  int metrics_port_ = 0;
};

// The outcome of a traffikd run to completion.
struct RunResult {
  // Exit code, 128 + signal if killed by a signal, or -1 if it did not exit
  // within the timeout (it is then killed).
  int exit_code = -1;
  std::string output;  // stderr and stdout, interleaved
};

// Runs traffikd with `args` until it exits (at most `timeout`).
RunResult RunTraffikd(const std::vector<std::string>& args,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10));

// A plain HTTP response.
struct HttpResponse {
  int status = 0;
  std::string headers;  // the raw header block after the status line
  std::string body;     // de-chunked if Transfer-Encoding: chunked
};

// GET http://127.0.0.1:<port><path> over a raw socket (HTTP/1.0, Connection:
// close), reading until the server closes. Fails on connection or protocol
// errors, or after `timeout` without progress.
absl::StatusOr<HttpResponse> HttpGet(
    int port, const std::string& path,
    std::chrono::milliseconds timeout = std::chrono::seconds(5));

// A TCP socket bound to 127.0.0.1 on a free port and listening, held until
// destruction (to make a port "taken"). No SO_REUSEPORT, so gRPC cannot share
// it. Move-only.
class HeldPort {
 public:
  static absl::StatusOr<HeldPort> Listen();

  HeldPort(HeldPort&& other) noexcept;
  HeldPort& operator=(HeldPort&& other) noexcept;
  HeldPort(const HeldPort&) = delete;
  HeldPort& operator=(const HeldPort&) = delete;
  ~HeldPort();

  int port() const { return port_; }

 private:
  HeldPort(int fd, int port) : fd_(fd), port_(port) {}

  int fd_ = -1;
  int port_ = 0;
};

// True if a TCP connection to 127.0.0.1:<port> succeeds.
bool CanConnect(int port);

// Finds the sample `name{labels...}` in Prometheus text output and returns its
// value. Every `key="value"` in `labels` must be among the sample's labels.
std::optional<double> SampleValue(const std::string& text, const std::string& name,
                                  const std::map<std::string, std::string>& labels = {});

}  // namespace traffik::e2e

#include "e2e/traffikd_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/spawn.h"

#ifndef TRAFFIKD_PATH
#error "TRAFFIKD_PATH must name the traffikd binary"
#endif

namespace traffik::e2e {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(10);

std::string TempDir() {
  for (const char* name : {"TEST_TMPDIR", "TMPDIR"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && value[0] != '\0') return value;
  }
  return "/tmp";
}

std::string ErrnoText(int error) { return std::strerror(error); }

// Creates an empty temp file; returns its path and an O_CLOEXEC fd.
absl::StatusOr<std::pair<std::string, int>> CreateTempFd(const std::string& stem,
                                                         const std::string& suffix) {
  std::string path = absl::StrCat(TempDir(), "/", stem, "-XXXXXX", suffix);
  const int fd =
      mkostemps(path.data(), static_cast<int>(suffix.size()), O_CLOEXEC | O_APPEND);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("mkostemps(", path, "): ", ErrnoText(errno)));
  }
  return std::make_pair(std::move(path), fd);
}

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Splits a chunked transfer-encoded body; nullopt if malformed.
std::optional<std::string> Dechunk(absl::string_view data) {
  std::string body;
  while (true) {
    const size_t line_end = data.find("\r\n");
    if (line_end == absl::string_view::npos) return std::nullopt;
    absl::string_view size_text = data.substr(0, line_end);
    size_text = size_text.substr(0, size_text.find(';'));  // drop extensions
    uint64_t size = 0;
    if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(size_text), &size)) {
      return std::nullopt;
    }
    data.remove_prefix(line_end + 2);
    if (size == 0) return body;
    if (data.size() < size + 2) return std::nullopt;
    body.append(data.data(), size);
    data.remove_prefix(size + 2);
  }
}

void SetSocketTimeouts(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

sockaddr_in Loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

}  // namespace

const char* TraffikdPath() { return TRAFFIKD_PATH; }

// ---------------------------------------------------------------- TempFile

absl::StatusOr<TempFile> TempFile::Create(const std::string& contents,
                                          const std::string& suffix,
                                          const std::string& stem) {
  absl::StatusOr<std::pair<std::string, int>> created = CreateTempFd(stem, suffix);
  if (!created.ok()) return created.status();
  auto [path, fd] = std::move(*created);
  TempFile file(path);  // removes the file on any error below
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = write(fd, contents.data() + written, contents.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = errno;
      close(fd);
      return absl::InternalError(absl::StrCat("write(", path, "): ", ErrnoText(error)));
    }
    written += static_cast<size_t>(n);
  }
  close(fd);
  return file;
}

TempFile::TempFile(TempFile&& other) noexcept : path_(std::exchange(other.path_, "")) {}

TempFile& TempFile::operator=(TempFile&& other) noexcept {
  if (this != &other) {
    if (!path_.empty()) unlink(path_.c_str());
    path_ = std::exchange(other.path_, "");
  }
  return *this;
}

TempFile::~TempFile() {
  if (!path_.empty()) unlink(path_.c_str());
}

// --------------------------------------------------------- TraffikdProcess

absl::StatusOr<std::unique_ptr<TraffikdProcess>> TraffikdProcess::Spawn(
    const std::vector<std::string>& args) {
  absl::StatusOr<std::pair<std::string, int>> output =
      CreateTempFd("traffikd-output", ".log");
  if (!output.ok()) return output.status();
  auto [output_path, output_fd] = std::move(*output);

  absl::StatusOr<pid_t> pid =
      testing_support::SpawnChild(std::string(TraffikdPath()), args, output_fd);
  close(output_fd);
  if (!pid.ok()) {
    unlink(output_path.c_str());
    return pid.status();
  }
  return std::unique_ptr<TraffikdProcess>(new TraffikdProcess(*pid, output_path));
}

absl::StatusOr<std::unique_ptr<TraffikdProcess>> TraffikdProcess::Start(
    const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  absl::StatusOr<std::unique_ptr<TraffikdProcess>> spawned = Spawn(args);
  if (!spawned.ok()) return spawned.status();
  std::unique_ptr<TraffikdProcess> process = std::move(*spawned);

  // Only a complete line (with its newline) counts.
  static const std::regex kStartupLine(
      R"(traffikd: listening grpc=(\S+):(\d+) metrics=(off|\S+:(\d+))\n)");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const std::string text = process->StderrText();
    std::smatch match;
    if (std::regex_search(text, match, kStartupLine)) {
      if (!absl::SimpleAtoi(match[2].str(), &process->grpc_port_) ||
          (match[3].str() != "off" &&
           !absl::SimpleAtoi(match[4].str(), &process->metrics_port_))) {
        return absl::InternalError(
            absl::StrCat("unparsable startup line: ", match[0].str()));
      }
      return process;
    }
    if (!process->IsRunning()) {
      return absl::FailedPreconditionError(
          absl::StrCat("traffikd exited with status ", process->exit_status_.value_or(-1),
                       " before its startup line; output:\n", process->StderrText()));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("no startup line from traffikd within ", timeout.count(),
                       " ms; output:\n", text));
      // `process` is killed and reaped by its destructor.
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

TraffikdProcess::~TraffikdProcess() {
  if (!exit_status_.has_value()) {
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  unlink(output_path_.c_str());
}

std::string TraffikdProcess::grpc_address() const {
  return absl::StrCat("127.0.0.1:", grpc_port_);
}

bool TraffikdProcess::SendSignal(int signal) {
  if (exit_status_.has_value()) return false;
  return kill(pid_, signal) == 0;
}

bool TraffikdProcess::IsRunning() {
  if (exit_status_.has_value()) return false;
  int status = 0;
  pid_t result;
  do {
    result = waitpid(pid_, &status, WNOHANG);
  } while (result < 0 && errno == EINTR);
  if (result == pid_) {
    exit_status_ = DecodeWaitStatus(status);
    return false;
  }
  if (result < 0) {  // ECHILD: somebody else reaped it; treat as gone.
    exit_status_ = -1;
    return false;
  }
  return true;
}

std::optional<int> TraffikdProcess::WaitExit(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (IsRunning()) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(kPollInterval);
  }
  return exit_status_;
}

std::string TraffikdProcess::StderrText() const { return ReadFileOrEmpty(output_path_); }

bool TraffikdProcess::WaitForStderr(const std::string& needle,
                                    std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!absl::StrContains(StderrText(), needle)) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(kPollInterval);
  }
  return true;
}

RunResult RunTraffikd(const std::vector<std::string>& args,
                      std::chrono::milliseconds timeout) {
  RunResult result;
  absl::StatusOr<std::unique_ptr<TraffikdProcess>> process = TraffikdProcess::Spawn(args);
  if (!process.ok()) {
    result.output = process.status().ToString();
    return result;
  }
  result.exit_code = (*process)->WaitExit(timeout).value_or(-1);
  result.output = (*process)->StderrText();
  return result;  // the destructor kills a process that did not exit
}

// ------------------------------------------------------------------- HTTP

absl::StatusOr<HttpResponse> HttpGet(int port, const std::string& path,
                                     std::chrono::milliseconds timeout) {
  const std::string where = absl::StrCat("http://127.0.0.1:", port, path);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", ErrnoText(errno)));
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  SetSocketTimeouts(fd, timeout);

  const sockaddr_in addr = Loopback(port);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::UnavailableError(
        absl::StrCat("connect ", where, ": ", ErrnoText(errno)));
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1:", port,
                   "\r\nConnection: close\r\n\r\n");
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n =
        send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::UnavailableError(absl::StrCat("send ", where, ": ", ErrnoText(errno)));
    }
    sent += static_cast<size_t>(n);
  }

  std::string raw;
  char buffer[16384];
  while (true) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("recv ", where, ": ", ErrnoText(errno)));
    }
    if (n == 0) break;
    raw.append(buffer, static_cast<size_t>(n));
  }

  const size_t status_end = raw.find("\r\n");
  const size_t header_end = raw.find("\r\n\r\n");
  if (status_end == std::string::npos || header_end == std::string::npos) {
    return absl::DataLossError(
        absl::StrCat("incomplete HTTP response from ", where, ": ", raw.substr(0, 200)));
  }
  // "HTTP/1.x NNN Reason"
  const std::string status_line = raw.substr(0, status_end);
  HttpResponse response;
  const size_t space = status_line.find(' ');
  if (!absl::StartsWith(status_line, "HTTP/") || space == std::string::npos ||
      !absl::SimpleAtoi(status_line.substr(space + 1, 3), &response.status)) {
    return absl::DataLossError(
        absl::StrCat("bad HTTP status line from ", where, ": ", status_line));
  }
  response.headers = raw.substr(status_end + 2, header_end - status_end - 2);
  response.body = raw.substr(header_end + 4);
  if (absl::StrContains(absl::AsciiStrToLower(response.headers),
                        "transfer-encoding: chunked")) {
    std::optional<std::string> body = Dechunk(response.body);
    if (!body.has_value()) {
      return absl::DataLossError(absl::StrCat("bad chunked body from ", where));
    }
    response.body = std::move(*body);
  }
  return response;
}

// --------------------------------------------------------------- HeldPort

absl::StatusOr<HeldPort> HeldPort::Listen() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", ErrnoText(errno)));
  sockaddr_in addr = Loopback(0);
  socklen_t length = sizeof(addr);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(fd, 16) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    const int error = errno;
    close(fd);
    return absl::InternalError(
        absl::StrCat("bind/listen 127.0.0.1:0: ", ErrnoText(error)));
  }
  return HeldPort(fd, ntohs(addr.sin_port));
}

HeldPort::HeldPort(HeldPort&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), port_(std::exchange(other.port_, 0)) {}

HeldPort& HeldPort::operator=(HeldPort&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    port_ = std::exchange(other.port_, 0);
  }
  return *this;
}

HeldPort::~HeldPort() {
  if (fd_ >= 0) close(fd_);
}

bool CanConnect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const sockaddr_in addr = Loopback(port);
  const bool connected =
      connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return connected;
}

std::optional<double> SampleValue(const std::string& text, const std::string& name,
                                  const std::map<std::string, std::string>& labels) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, name)) continue;
    const absl::string_view rest = line.substr(name.size());
    if (rest.empty() || (rest[0] != '{' && rest[0] != ' ')) continue;
    bool all = true;
    for (const auto& [key, value] : labels) {
      if (!absl::StrContains(rest, absl::StrCat(key, "=\"", value, "\""))) all = false;
    }
    if (!all) continue;
    const size_t space = rest.rfind(' ');
    double number = 0;
    if (absl::SimpleAtod(rest.substr(space + 1), &number)) return number;
  }
  return std::nullopt;
}

}  // namespace traffik::e2e

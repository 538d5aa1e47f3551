// Fuzz target: the /metrics HTTP endpoint as a client reaches it. The input is
// sent as raw bytes over a loopback connection to one HttpExposer (libevent's
// evhttp parses the request; our code routes it, bounds the connection and
// answers), then the write side is shut. Whatever the bytes, the exposer must
// answer with a well-formed HTTP/1.x status line or close the connection, and
// keep serving the next input; the pure router (RouteMetricsRequest) is also
// called on the input split into method and target, and must stay within its
// three answers.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "metrics/http_exposer.h"

namespace {

traffik::HttpExposer& Exposer() {
  static traffik::HttpExposer* exposer = [] {
    traffik::HttpExposerOptions options;
    options.head_timeout = std::chrono::milliseconds(500);
    options.write_timeout = std::chrono::milliseconds(500);
    auto started = traffik::HttpExposer::Start(
        "127.0.0.1:0", [] { return std::string("traffik_fuzz_total 1\n"); }, options);
    if (!started.ok()) std::abort();
    return started->release();  // lives for the whole fuzzing process
  }();
  return *exposer;
}

// Connects to the exposer. Each input is one connection (thousands a second):
// the socket lingers 0 s so closing it leaves no TIME_WAIT to exhaust the
// ephemeral ports, and a refused or unavailable address is retried for up to
// 2 s (a busy machine, a full backlog) before the exposer is deemed to have
// stopped accepting, which is a failure.
int Connect(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) std::abort();
    const linger no_time_wait{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &no_time_wait, sizeof(no_time_wait));
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0)
      return fd;
    close(fd);
    usleep(10'000);
  }
  std::abort();  // the exposer stopped accepting
}

// Reads until the server closes or 2 s pass; returns what arrived.
std::string ReadAll(int fd) {
  std::string out;
  char buffer[4096];
  while (out.size() < (1 << 20)) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 2000) <= 0) break;
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  return out;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// A status line: "HTTP/<major>.<minor> <ddd> ". Requests our handler answers
// always get HTTP/1.0 or 1.1 (others 505: HttpExposerTest.OnlyHttp1Served);
// evhttp's own 400 for a malformed head echoes the version numbers it parsed,
// which may be any (even negative, overflowed) integers: numbers only, never
// caller text, so they are accepted here.
bool Integer(std::string_view a, size_t* i) {
  if (*i < a.size() && a[*i] == '-') ++*i;
  const size_t start = *i;
  while (*i < a.size() && IsDigit(a[*i])) ++*i;
  return *i > start;
}

bool IsStatusLine(std::string_view a) {
  if (a.substr(0, 5) != "HTTP/") return false;
  size_t i = 5;
  if (!Integer(a, &i) || i >= a.size() || a[i++] != '.') return false;
  if (!Integer(a, &i) || i >= a.size() || a[i++] != ' ') return false;
  return i + 4 <= a.size() && IsDigit(a[i]) && IsDigit(a[i + 1]) && IsDigit(a[i + 2]) &&
         a[i + 3] == ' ';
}

void CheckRoute(std::string_view input) {
  const size_t space = input.find(' ');
  const std::string_view method = input.substr(0, space);
  const std::string_view target =
      space == std::string_view::npos ? std::string_view() : input.substr(space + 1);
  const traffik::MetricsRoute route = traffik::RouteMetricsRequest(method, target);
  if (route.status != 200 && route.status != 404 && route.status != 405) std::abort();
  if (route.serve_metrics != (route.status == 200)) std::abort();
  if (route.head_only && route.status != 200) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 16384) return 0;  // beyond the exposer's head limit; nothing new
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckRoute(input);

  const int fd = Connect(Exposer().port());
  size_t sent = 0;
  while (sent < size) {
    const ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may close early on a bad head
    sent += static_cast<size_t>(n);
  }
  shutdown(fd, SHUT_WR);
  const std::string answer = ReadAll(fd);
  close(fd);
  // Either nothing (closed without an answer) or a status line.
  if (!answer.empty() && !IsStatusLine(answer)) std::abort();
  return 0;
}

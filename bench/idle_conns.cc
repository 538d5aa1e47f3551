// traffik_idle_conns: opens N idle gRPC connections to a server and holds them.
//
// Each connection is its own TCP connection carrying a gRPC channel that
// completed one call (grpc.health.v1.Health/Check) and then went quiet, bound
// round robin to --sources source addresses counted up from --first-source
// (each address has its own ephemeral port range). Raises its soft open-file
// limit to the hard one first (raise the hard one with `ulimit -Hn` as root).
//
// Prints "idle_conns: ready connections=N ..." once all are open, then holds
// them until SIGTERM/SIGINT (or for --hold), then calls once more on every
// connection and prints "idle_conns: verified answered=A of N". Exit status 0
// if every connection opened and answered both times, 1 otherwise, 2 on bad
// flags.
//
//   traffik_idle_conns --target 127.0.0.1:50051 --connections 10000
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/numbers.h"
#include "base/fd_limit.h"
#include "idle_connections.h"

namespace {

using Clock = std::chrono::steady_clock;

// File descriptors beyond the connections: stdio, gRPC's epoll and wake-up
// fds, the threads' completion queues.
constexpr uint64_t kSpareFds = 64;

void Usage(FILE* out) {
  std::fputs(
      "usage: traffik_idle_conns --target IPV4:PORT [flags]\n"
      "Opens idle gRPC connections (one call each), holds them until SIGTERM/SIGINT.\n"
      "  --target IPV4:PORT    server address (required)\n"
      "  --connections N       connections to open (default 10000)\n"
      "  --sources K           source addresses, round robin (default: one per\n"
      "                        5000 connections)\n"
      "  --first-source ADDR   first source address (default 127.0.0.2)\n"
      "  --threads T           threads opening connections (default 8)\n"
      "  --deadline-ms MS      per-call deadline (default 5000)\n"
      "  --hold-s S            hold S seconds instead of until a signal\n",
      out);
}

bool ParseInt(const char* text, int min, int max, int* out) {
  int value = 0;
  if (!absl::SimpleAtoi(text, &value) || value < min || value > max) return false;
  *out = value;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  traffik::bench::IdleConnectionOptions options;
  int sources = 0;
  std::string first_source = "127.0.0.2";
  int deadline_ms = 5000;
  int hold_s = -1;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      Usage(stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "idle_conns: %s needs a value\n", flag.substr(0, 64).c_str());
      Usage(stderr);
      return 2;
    }
    const char* value = argv[++i];
    bool ok = true;
    if (flag == "--target") {
      options.target = value;
    } else if (flag == "--connections") {
      ok = ParseInt(value, 1, traffik::bench::kMaxIdleConnections, &options.connections);
    } else if (flag == "--sources") {
      ok = ParseInt(value, 1, 254, &sources);
    } else if (flag == "--first-source") {
      first_source = value;
    } else if (flag == "--threads") {
      ok = ParseInt(value, 1, 256, &options.threads);
    } else if (flag == "--deadline-ms") {
      ok = ParseInt(value, 1, 600000, &deadline_ms);
    } else if (flag == "--hold-s") {
      ok = ParseInt(value, 0, 86400, &hold_s);
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "idle_conns: bad flag or value: %s\n",
                   flag.substr(0, 64).c_str());
      Usage(stderr);
      return 2;
    }
  }
  if (options.target.empty()) {
    std::fputs("idle_conns: --target is required\n", stderr);
    Usage(stderr);
    return 2;
  }
  options.call_deadline = std::chrono::milliseconds(deadline_ms);
  if (sources == 0) sources = (options.connections + 4999) / 5000;
  absl::StatusOr<std::vector<in_addr>> addresses =
      traffik::bench::AddressRange(first_source, sources);
  if (!addresses.ok()) {
    std::fprintf(stderr, "idle_conns: %s\n",
                 std::string(addresses.status().message()).c_str());
    return 2;
  }
  options.sources = *addresses;

  absl::StatusOr<traffik::OpenFileLimit> limit = traffik::RaiseOpenFileLimitToHard();
  if (!limit.ok()) {
    std::fprintf(stderr, "idle_conns: %s\n",
                 std::string(limit.status().message()).c_str());
    return 1;
  }
  const uint64_t needed = static_cast<uint64_t>(options.connections) + kSpareFds;
  if (limit->soft < needed) {
    std::fprintf(stderr,
                 "idle_conns: the open-file limit is %llu, %llu needed: raise the hard "
                 "limit (ulimit -Hn %llu, root with CAP_SYS_RESOURCE)\n",
                 static_cast<unsigned long long>(limit->soft),
                 static_cast<unsigned long long>(needed),
                 static_cast<unsigned long long>(needed));
    return 1;
  }

  // Taken synchronously below; blocked before any thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  const Clock::time_point start = Clock::now();
  absl::StatusOr<std::unique_ptr<traffik::bench::IdleConnections>> held =
      traffik::bench::IdleConnections::Open(options);
  if (!held.ok()) {
    std::fprintf(stderr, "idle_conns: %s\n",
                 std::string(held.status().message()).c_str());
    return 1;
  }
  const auto open_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  std::printf(
      "idle_conns: ready connections=%d sources=%s+%d open_ms=%lld fd_limit=%llu\n",
      (*held)->size(), first_source.c_str(), sources - 1, static_cast<long long>(open_ms),
      static_cast<unsigned long long>(limit->soft));
  std::fflush(stdout);

  if (hold_s >= 0) {
    timespec timeout{hold_s, 0};
    sigtimedwait(&stop_signals, nullptr, &timeout);
  } else {
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
  }
  const int answered = (*held)->Verify();
  std::printf("idle_conns: verified answered=%d of %d\n", answered, (*held)->size());
  std::fflush(stdout);
  return answered == (*held)->size() ? 0 : 1;
}

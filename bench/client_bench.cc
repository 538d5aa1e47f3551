// Decisions through the client library (traffik::Client::Check) from many
// concurrent callers, each a thread in a closed loop, against one traffikd:
// plain unary checks or coalesced ones (ClientOptions::coalesce).
//
//   traffik_client_bench --target 127.0.0.1:PORT --mode unary|coalesced
//       [--callers 256] [--duration-s 8] [--warmup-s 1] [--keys 1000]
//       [--uid bench] [--tenant T] [--max-delay-us 500] [--max-batch 64]
//       [--deadline-ms 2000] [--server-pid PID]
//
// Prints one line of key=value on stdout: mode, callers, decisions, seconds,
// dps (decisions/s), p50_us, p99_us (per Check, measured by the caller),
// errors, error_codes (per status code), client_cpu_us (this process' CPU per decision),
// server_cpu_us (CPU per decision of --server-pid, from /proc/PID/stat; -1 without it),
// rpcs and coalesced (the client's stats over the measured window).

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "traffik/client.h"

namespace {

struct Flags {
  std::string target;
  std::string mode = "unary";
  int callers = 256;
  double duration_s = 8;
  double warmup_s = 1;
  int keys = 1000;
  std::string uid = "bench";
  std::string tenant;
  int64_t max_delay_us = 500;
  size_t max_batch = 64;
  int64_t deadline_ms = 2000;
  int server_pid = 0;
};

[[noreturn]] void Usage(const std::string& error) {
  std::cerr << "traffik_client_bench: " << error
            << "\nusage: traffik_client_bench --target HOST:PORT --mode unary|coalesced "
               "[--callers N] [--duration-s S] [--warmup-s S] [--keys N] [--uid U] "
               "[--tenant T] [--max-delay-us N] [--max-batch N] [--deadline-ms N] "
               "[--server-pid PID]\n";
  std::exit(2);
}

Flags Parse(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string name = argv[i];
    if (i + 1 >= argc) Usage(absl::StrCat(name, " needs a value"));
    const std::string value = argv[++i];
    try {
      if (name == "--target")
        f.target = value;
      else if (name == "--mode")
        f.mode = value;
      else if (name == "--callers")
        f.callers = std::stoi(value);
      else if (name == "--duration-s")
        f.duration_s = std::stod(value);
      else if (name == "--warmup-s")
        f.warmup_s = std::stod(value);
      else if (name == "--keys")
        f.keys = std::stoi(value);
      else if (name == "--uid")
        f.uid = value;
      else if (name == "--tenant")
        f.tenant = value;
      else if (name == "--max-delay-us")
        f.max_delay_us = std::stoll(value);
      else if (name == "--max-batch")
        f.max_batch = std::stoul(value);
      else if (name == "--deadline-ms")
        f.deadline_ms = std::stoll(value);
      else if (name == "--server-pid")
        f.server_pid = std::stoi(value);
      else
        Usage(absl::StrCat("unknown flag ", name));
    } catch (const std::exception&) {
      Usage(absl::StrCat("bad value for ", name));
    }
  }
  if (f.target.empty()) Usage("--target is required");
  if (f.mode != "unary" && f.mode != "coalesced") Usage("--mode: unary or coalesced");
  if (f.callers < 1 || f.keys < 1 || f.duration_s <= 0 || f.warmup_s < 0) {
    Usage("--callers, --keys >= 1; --duration-s > 0; --warmup-s >= 0");
  }
  return f;
}

// CPU time (user + system) of process `pid`, in microseconds; -1 if unknown.
int64_t ProcessCpuMicros(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces) start after ')'.
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  int64_t utime = 0, stime = 0;
  // Fields 3.. : state(3) ... utime(14) stime(15).
  for (int n = 3; n <= 15 && fields >> field; ++n) {
    if (n == 14) utime = std::stoll(field);
    if (n == 15) stime = std::stoll(field);
  }
  const long ticks = sysconf(_SC_CLK_TCK);
  return (utime + stime) * 1'000'000 / ticks;
}

int64_t SelfCpuMicros() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto micros = [](const timeval& tv) {
    return static_cast<int64_t>(tv.tv_sec) * 1'000'000 + tv.tv_usec;
  };
  return micros(usage.ru_utime) + micros(usage.ru_stime);
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's abseil checks every absl::Mutex lock for deadlock cycles (gRPC's
  // included); off, as in traffikd and a production app (README).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  const Flags flags = Parse(argc, argv);
  traffik::ClientOptions options;
  options.target = flags.target;
  options.deadline = std::chrono::milliseconds(flags.deadline_ms);
  if (flags.mode == "coalesced") {
    options.coalesce = traffik::CoalesceOptions{
        .max_delay = std::chrono::microseconds(flags.max_delay_us),
        .max_batch = flags.max_batch};
  }
  absl::StatusOr<std::shared_ptr<traffik::Client>> created =
      traffik::Client::Create(options);
  if (!created.ok()) Usage(std::string(created.status().message()));
  std::shared_ptr<traffik::Client> client = *created;

  // Connect before the clock starts.
  if (absl::StatusOr<bool> healthy = client->Healthy(); !healthy.ok() || !*healthy) {
    std::cerr << "traffik_client_bench: traffikd at " << flags.target
              << " is not healthy\n";
    return 1;
  }

  std::atomic<bool> measuring{false};
  std::atomic<bool> stop{false};
  std::vector<std::vector<uint32_t>> latencies(flags.callers);  // us, per caller
  // Per caller, errors per absl::StatusCode (0..16).
  std::vector<std::array<uint64_t, 17>> errors(flags.callers, std::array<uint64_t, 17>{});
  std::vector<std::thread> threads;
  threads.reserve(flags.callers);
  for (int c = 0; c < flags.callers; ++c) {
    threads.emplace_back([&, c] {
      std::vector<uint32_t>& mine = latencies[c];
      mine.reserve(1 << 16);
      traffik::ThrottleRequest request;
      request.throttle_uid = flags.uid;
      request.tenant = flags.tenant;
      uint64_t n = static_cast<uint64_t>(c);
      while (!stop.load(std::memory_order_relaxed)) {
        request.identifier = absl::StrCat("client-bench-", n % flags.keys);
        n += static_cast<uint64_t>(flags.callers);
        const auto start = std::chrono::steady_clock::now();
        absl::StatusOr<traffik::ThrottleResult> result = client->Check(request);
        const auto took = std::chrono::steady_clock::now() - start;
        if (!measuring.load(std::memory_order_relaxed)) continue;
        if (!result.ok()) {
          ++errors[c][std::min<size_t>(16, static_cast<size_t>(result.status().code()))];
          continue;
        }
        mine.push_back(static_cast<uint32_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(took).count()));
      }
    });
  }

  std::this_thread::sleep_for(std::chrono::duration<double>(flags.warmup_s));
  const traffik::ClientStats stats_before = client->stats();
  const int64_t server_cpu_before =
      flags.server_pid > 0 ? ProcessCpuMicros(flags.server_pid) : -1;
  const int64_t client_cpu_before = SelfCpuMicros();
  const auto start = std::chrono::steady_clock::now();
  measuring.store(true);
  std::this_thread::sleep_for(std::chrono::duration<double>(flags.duration_s));
  measuring.store(false);
  const auto end = std::chrono::steady_clock::now();
  const int64_t client_cpu_after = SelfCpuMicros();
  const int64_t server_cpu_after =
      flags.server_pid > 0 ? ProcessCpuMicros(flags.server_pid) : -1;
  const traffik::ClientStats stats_after = client->stats();
  stop.store(true);
  for (std::thread& t : threads) t.join();

  std::vector<uint32_t> all;
  uint64_t error_count = 0;
  std::array<uint64_t, 17> by_code{};
  for (int c = 0; c < flags.callers; ++c) {
    all.insert(all.end(), latencies[c].begin(), latencies[c].end());
    for (size_t code = 0; code < by_code.size(); ++code) {
      by_code[code] += errors[c][code];
      error_count += errors[c][code];
    }
  }
  std::vector<std::string> code_counts;  // e.g. "DEADLINE_EXCEEDED:3"
  for (size_t code = 0; code < by_code.size(); ++code) {
    if (by_code[code] == 0) continue;
    code_counts.push_back(
        absl::StrCat(absl::StatusCodeToString(static_cast<absl::StatusCode>(code)), ":",
                     by_code[code]));
  }
  // "-", or e.g. "DEADLINE_EXCEEDED:3,UNAVAILABLE:1".
  const std::string error_codes =
      code_counts.empty() ? std::string("-") : absl::StrJoin(code_counts, ",");
  const double seconds = std::chrono::duration<double>(end - start).count();
  const uint64_t decisions = all.size();
  auto percentile = [&all](double p) -> uint32_t {
    if (all.empty()) return 0;
    const size_t k = std::min(all.size() - 1, static_cast<size_t>(p * all.size()));
    std::nth_element(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k),
                     all.end());
    return all[k];
  };
  const uint32_t p50 = percentile(0.50);
  const uint32_t p99 = percentile(0.99);
  auto per_decision = [decisions](int64_t before, int64_t after) -> double {
    if (before < 0 || after < 0 || decisions == 0) return -1;
    return static_cast<double>(after - before) / static_cast<double>(decisions);
  };
  std::printf(
      "mode=%s callers=%d decisions=%llu seconds=%.3f dps=%.0f p50_us=%u p99_us=%u "
      "errors=%llu error_codes=%s client_cpu_us=%.2f server_cpu_us=%.2f rpcs=%llu "
      "coalesced=%llu\n",
      flags.mode.c_str(), flags.callers, static_cast<unsigned long long>(decisions),
      seconds, decisions / seconds, p50, p99,
      static_cast<unsigned long long>(error_count), error_codes.c_str(),
      per_decision(client_cpu_before, client_cpu_after),
      per_decision(server_cpu_before, server_cpu_after),
      static_cast<unsigned long long>(stats_after.rpcs - stats_before.rpcs),
      static_cast<unsigned long long>(stats_after.coalesced - stats_before.coalesced));
  return 0;
}

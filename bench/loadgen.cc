// traffik_loadgen: a closed-loop gRPC load generator for traffik.v1.ThrottleService
// and envoy.service.ratelimit.v3.RateLimitService (--rpc envoy).
//
// Keeps --concurrency calls in flight over --channels TCP connections, driven
// by --threads completion-queue threads (async API). Every completion starts
// the next call at once, so throughput is whatever the target sustains at that
// concurrency. Calls completing during --warmup are discarded; calls completing
// in the following --duration are measured; then no new calls start, the ones in
// flight are drained (each has a --deadline-ms deadline) and the result is
// printed. It always stops by itself.
//
//   traffik_loadgen --target 127.0.0.1:50051 --concurrency 64 --duration 10s
//   traffik_loadgen --target 127.0.0.1:50051 --rpc batch --batch-size 10 --json
//   traffik_loadgen --target 127.0.0.1:50051 --rpc envoy --domain bench --uid user
//
// Run with --help for every flag.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
using traffik::v1::ShouldThrottleBatchRequest;
using traffik::v1::ShouldThrottleBatchResponse;
using traffik::v1::ShouldThrottleRequest;
using traffik::v1::ShouldThrottleResponse;
using traffik::v1::ThrottleService;
using RateLimitService = envoy::service::ratelimit::v3::RateLimitService;
using RateLimitRequest = envoy::service::ratelimit::v3::RateLimitRequest;
using RateLimitResponse = envoy::service::ratelimit::v3::RateLimitResponse;

constexpr int kNumCodes = 17;  // grpc::StatusCode 0..16

const char* CodeName(int code) {
  static constexpr std::array<const char*, kNumCodes> kNames = {"OK",
                                                                "CANCELLED",
                                                                "UNKNOWN",
                                                                "INVALID_ARGUMENT",
                                                                "DEADLINE_EXCEEDED",
                                                                "NOT_FOUND",
                                                                "ALREADY_EXISTS",
                                                                "PERMISSION_DENIED",
                                                                "RESOURCE_EXHAUSTED",
                                                                "FAILED_PRECONDITION",
                                                                "ABORTED",
                                                                "OUT_OF_RANGE",
                                                                "UNIMPLEMENTED",
                                                                "INTERNAL",
                                                                "UNAVAILABLE",
                                                                "DATA_LOSS",
                                                                "UNAUTHENTICATED"};
  return code >= 0 && code < kNumCodes ? kNames[code] : "UNKNOWN_CODE";
}

enum class Rpc { kShouldThrottle, kBatch, kEnvoy };

struct Options {
  std::string target;
  int concurrency = 64;
  int channels = 1;
  int threads = 1;
  int64_t duration_ms = 10000;
  int64_t warmup_ms = 1000;
  int64_t deadline_ms = 1000;
  std::string rpc_name = "should_throttle";
  Rpc rpc = Rpc::kShouldThrottle;
  int batch_size = 10;
  std::string tenant;
  std::string uid = "bench";
  std::string domain = "bench";  // --rpc envoy
  uint64_t limit = 1000000;      // 0: no inline spec (the uid must be configured)
  uint64_t period_ms = 1000;
  uint32_t cost = 0;
  int keys = 1;
  bool json = false;
  // --watch-pid NAME=PID: processes whose CPU time over the measured window
  // is reported (e.g. the server under test, redis-server).
  std::vector<std::pair<std::string, int>> watch_pids;
};

void Usage(FILE* out) {
  std::fputs(
      "usage: traffik_loadgen --target HOST:PORT [flags]\n"
      "Closed-loop load on traffik.v1.ThrottleService; bounded by warmup + duration.\n"
      "  --target HOST:PORT    server address (required)\n"
      "  --concurrency N       calls in flight (default 64)\n"
      "  --channels M          TCP connections, calls spread round robin (default 1)\n"
      "  --threads T           completion-queue threads (default 1)\n"
      "  --duration D          measured time, e.g. 10s, 500ms (default 10s)\n"
      "  --warmup D            unmeasured time before it (default 1s)\n"
      "  --deadline-ms MS      per-call deadline (default 1000)\n"
      "  --rpc KIND            should_throttle | batch | noop (noop = should_throttle;\n"
      "                        point --target at traffik_noop_server) | envoy\n"
      "                        (ShouldRateLimit: domain --domain, one descriptor with\n"
      "                        one entry, key --uid, value the identifier)\n"
      "  --domain D            envoy: request domain (default bench)\n"
      "  --batch-size K        items per ShouldThrottleBatch call (default 10)\n"
      "  --tenant T            request tenant (default empty = server default)\n"
      "  --uid U               throttle_uid (default bench)\n"
      "  --limit L             inline spec limit; 0 = no spec, U must be configured\n"
      "                        (default 1000000)\n"
      "  --period-ms P         inline spec period (default 1000)\n"
      "  --cost C              tokens per hit (default 0 = 1)\n"
      "  --keys K              distinct identifiers used round robin; 1 = hot key\n"
      "                        (default 1)\n"
      "  --watch-pid NAME=PID  report PID's CPU time (user + system, all threads)\n"
      "                        over the measured window as NAME; repeatable (max 8)\n"
      "  --json                print one JSON object instead of text\n"
      "The load generator's own CPU time over the window is always reported, and the\n"
      "whole machine's busy CPU time (/proc/stat) as \"machine\".\n",
      out);
}

// "10s", "500ms", "2m", "1.5s"; a bare number is seconds.
std::optional<int64_t> ParseDurationMs(const std::string& text) {
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || !(value >= 0)) return std::nullopt;
  const std::string unit(end);
  double ms = 0;
  if (unit.empty() || unit == "s") {
    ms = value * 1000;
  } else if (unit == "ms") {
    ms = value;
  } else if (unit == "m") {
    ms = value * 60000;
  } else {
    return std::nullopt;
  }
  return static_cast<int64_t>(std::llround(ms));
}

std::optional<uint64_t> ParseUint(const std::string& text) {
  if (text.empty() || text[0] == '-') return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return std::nullopt;
  return value;
}

bool Fail(const std::string& message) {
  std::fprintf(stderr, "traffik_loadgen: %s (see --help)\n", message.c_str());
  return false;
}

// Returns false (after printing why) on a bad command line; sets *help.
bool ParseArgs(int argc, char** argv, Options& o, bool* help) {
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    std::optional<std::string> value;
    if (const size_t eq = flag.find('=');
        flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    if (flag == "--help" || flag == "-h") {
      *help = true;
      return true;
    }
    if (flag == "--json") {
      o.json = true;
      continue;
    }
    if (!value) {
      if (i + 1 >= argc) return Fail("missing value for " + flag);
      value = argv[++i];
    }
    const std::string& v = *value;
    auto positive_int = [&](int& out) {
      std::optional<uint64_t> n = ParseUint(v);
      if (!n || *n == 0 || *n > 1000000)
        return Fail("bad value for " + flag + ": '" + v + "'");
      out = static_cast<int>(*n);
      return true;
    };
    auto duration = [&](int64_t& out) {
      std::optional<int64_t> ms = ParseDurationMs(v);
      if (!ms) return Fail("bad duration for " + flag + ": '" + v + "'");
      out = *ms;
      return true;
    };
    auto uint = [&](uint64_t& out) {
      std::optional<uint64_t> n = ParseUint(v);
      if (!n) return Fail("bad value for " + flag + ": '" + v + "'");
      out = *n;
      return true;
    };
    bool ok = true;
    if (flag == "--target") {
      o.target = v;
    } else if (flag == "--concurrency") {
      ok = positive_int(o.concurrency);
    } else if (flag == "--channels") {
      ok = positive_int(o.channels);
    } else if (flag == "--threads") {
      ok = positive_int(o.threads);
    } else if (flag == "--duration") {
      ok = duration(o.duration_ms);
      if (ok && o.duration_ms == 0) ok = Fail("--duration must be > 0");
    } else if (flag == "--warmup") {
      ok = duration(o.warmup_ms);
    } else if (flag == "--deadline-ms") {
      uint64_t n = 0;
      ok = uint(n) && (n > 0 || Fail("--deadline-ms must be > 0"));
      o.deadline_ms = static_cast<int64_t>(n);
    } else if (flag == "--rpc") {
      o.rpc_name = v;
      if (v == "should_throttle" || v == "noop") {
        o.rpc = Rpc::kShouldThrottle;
      } else if (v == "batch") {
        o.rpc = Rpc::kBatch;
      } else if (v == "envoy") {
        o.rpc = Rpc::kEnvoy;
      } else {
        ok = Fail("--rpc must be should_throttle, batch, noop or envoy");
      }
    } else if (flag == "--domain") {
      o.domain = v;
    } else if (flag == "--batch-size") {
      ok = positive_int(o.batch_size);
    } else if (flag == "--tenant") {
      o.tenant = v;
    } else if (flag == "--uid") {
      o.uid = v;
    } else if (flag == "--limit") {
      ok = uint(o.limit);
    } else if (flag == "--period-ms") {
      ok = uint(o.period_ms);
    } else if (flag == "--cost") {
      uint64_t n = 0;
      ok = uint(n) && (n <= UINT32_MAX || Fail("--cost too large"));
      o.cost = static_cast<uint32_t>(n);
    } else if (flag == "--keys") {
      ok = positive_int(o.keys);
    } else if (flag == "--watch-pid") {
      const size_t eq = v.find('=');
      const uint64_t pid =
          eq == std::string::npos ? 0 : ParseUint(v.substr(eq + 1)).value_or(0);
      const std::string name = eq == std::string::npos ? "" : v.substr(0, eq);
      const bool name_ok = !name.empty() && name.size() <= 32 &&
                           std::all_of(name.begin(), name.end(), [](unsigned char c) {
                             return std::isalnum(c) || c == '_' || c == '-';
                           });
      if (!name_ok || pid == 0 || pid > 4194304) {
        ok = Fail("--watch-pid wants NAME=PID (NAME: up to 32 of [A-Za-z0-9_-])");
      } else if (o.watch_pids.size() >= 8) {
        ok = Fail("at most 8 --watch-pid");
      } else {
        o.watch_pids.emplace_back(name, static_cast<int>(pid));
      }
    } else {
      ok = Fail("unknown flag " + flag);
    }
    if (!ok) return false;
  }
  if (o.target.empty()) return Fail("--target is required");
  if (o.threads > o.concurrency) o.threads = o.concurrency;
  return true;
}

// Results of one thread; merged at the end.
struct Tally {
  uint64_t all_ok_calls = 0;  // OK calls over the whole run (warmup and drain too)
  uint64_t calls = 0;         // completed in the measured window, any status
  uint64_t allowed = 0;
  uint64_t throttled = 0;
  std::array<uint64_t, kNumCodes> codes{};
  std::vector<uint32_t> latency_us;  // OK calls only
};

// One call slot: a closed loop of its own.
struct Slot {
  ThrottleService::Stub* stub = nullptr;
  RateLimitService::Stub* envoy_stub = nullptr;
  RateLimitRequest envoy_request;
  RateLimitResponse envoy_response;
  std::unique_ptr<grpc::ClientAsyncResponseReader<RateLimitResponse>> envoy_reader;
  std::unique_ptr<grpc::ClientContext> context;
  ShouldThrottleRequest request;
  ShouldThrottleResponse response;
  ShouldThrottleBatchRequest batch_request;
  ShouldThrottleBatchResponse batch_response;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<ShouldThrottleResponse>> reader;
  std::unique_ptr<grpc::ClientAsyncResponseReader<ShouldThrottleBatchResponse>>
      batch_reader;
  Clock::time_point start;
};

class Worker {
 public:
  Worker(const Options& options, const std::vector<std::string>& ids, int index)
      : options_(options), ids_(ids), next_key_(index) {
    tally_.latency_us.reserve(1 << 18);
  }

  void AddSlot(ThrottleService::Stub* stub, RateLimitService::Stub* envoy_stub) {
    auto slot = std::make_unique<Slot>();
    slot->stub = stub;
    slot->envoy_stub = envoy_stub;
    slot->envoy_request.set_domain(options_.domain);
    slot->envoy_request.set_hits_addend(options_.cost);
    slot->envoy_request.add_descriptors()->add_entries()->set_key(options_.uid);
    FillTemplate(slot->request);
    for (int i = 0; i < options_.batch_size; ++i) {
      FillTemplate(*slot->batch_request.add_requests());
    }
    slots_.push_back(std::move(slot));
  }

  // Runs until measure_end has passed and every call has finished.
  void Run(Clock::time_point measure_start, Clock::time_point measure_end) {
    size_t in_flight = 0;
    for (auto& slot : slots_) {
      Start(*slot);
      ++in_flight;
    }
    void* tag = nullptr;
    bool ok = false;
    while (in_flight > 0 && cq_.Next(&tag, &ok)) {
      Slot& slot = *static_cast<Slot*>(tag);
      const Clock::time_point now = Clock::now();
      if (slot.status.ok()) ++tally_.all_ok_calls;
      if (now >= measure_start && now < measure_end) Record(slot, now);
      if (now < measure_end) {
        Start(slot);
      } else {
        --in_flight;
      }
    }
    cq_.Shutdown();
    while (cq_.Next(&tag, &ok)) {
    }
  }

  Tally& tally() { return tally_; }

 private:
  void FillTemplate(ShouldThrottleRequest& r) const {
    r.set_throttle_uid(options_.uid);
    r.set_tenant(options_.tenant);
    r.set_cost(options_.cost);
    if (options_.limit > 0) {
      r.mutable_spec()->set_limit(options_.limit);
      r.mutable_spec()->set_period_ms(options_.period_ms);
    }
  }

  const std::string& NextId() {
    const std::string& id = ids_[next_key_];
    next_key_ = (next_key_ + options_.threads) % ids_.size();
    return id;
  }

  void Start(Slot& slot) {
    slot.context = std::make_unique<grpc::ClientContext>();
    slot.context->set_deadline(std::chrono::system_clock::now() +
                               std::chrono::milliseconds(options_.deadline_ms));
    slot.start = Clock::now();
    if (options_.rpc == Rpc::kEnvoy) {
      slot.envoy_request.mutable_descriptors(0)->mutable_entries(0)->set_value(NextId());
      slot.envoy_response.Clear();
      slot.envoy_reader = slot.envoy_stub->PrepareAsyncShouldRateLimit(
          slot.context.get(), slot.envoy_request, &cq_);
      slot.envoy_reader->StartCall();
      slot.envoy_reader->Finish(&slot.envoy_response, &slot.status, &slot);
    } else if (options_.rpc == Rpc::kBatch) {
      for (ShouldThrottleRequest& item : *slot.batch_request.mutable_requests()) {
        item.set_identifier(NextId());
      }
      slot.batch_response.Clear();
      slot.batch_reader = slot.stub->PrepareAsyncShouldThrottleBatch(
          slot.context.get(), slot.batch_request, &cq_);
      slot.batch_reader->StartCall();
      slot.batch_reader->Finish(&slot.batch_response, &slot.status, &slot);
    } else {
      slot.request.set_identifier(NextId());
      slot.response.Clear();
      slot.reader =
          slot.stub->PrepareAsyncShouldThrottle(slot.context.get(), slot.request, &cq_);
      slot.reader->StartCall();
      slot.reader->Finish(&slot.response, &slot.status, &slot);
    }
  }

  void Record(const Slot& slot, Clock::time_point now) {
    ++tally_.calls;
    const int code = static_cast<int>(slot.status.error_code());
    ++tally_
          .codes[code >= 0 && code < kNumCodes ? code : static_cast<int>(grpc::UNKNOWN)];
    if (!slot.status.ok()) return;
    const int64_t us =
        std::chrono::duration_cast<std::chrono::microseconds>(now - slot.start).count();
    tally_.latency_us.push_back(
        static_cast<uint32_t>(std::clamp<int64_t>(us, 0, UINT32_MAX)));
    if (options_.rpc == Rpc::kEnvoy) {
      // The no-op server answers UNKNOWN (0): counted as allowed, as its
      // zero ShouldThrottle responses are.
      ++(slot.envoy_response.overall_code() != RateLimitResponse::OVER_LIMIT
             ? tally_.allowed
             : tally_.throttled);
    } else if (options_.rpc == Rpc::kBatch) {
      for (const ShouldThrottleResponse& r : slot.batch_response.responses()) {
        ++(r.wait_ms() == 0 ? tally_.allowed : tally_.throttled);
      }
    } else {
      ++(slot.response.wait_ms() == 0 ? tally_.allowed : tally_.throttled);
    }
  }

  const Options& options_;
  const std::vector<std::string>& ids_;
  size_t next_key_;
  grpc::CompletionQueue cq_;
  std::vector<std::unique_ptr<Slot>> slots_;
  Tally tally_;
};

// CPU seconds (user + system, all threads, reaped children excluded) of
// process `pid` from /proc/PID/stat; -1 when it cannot be read.
double ProcessCpuSeconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  const std::string text((std::istreambuf_iterator<char>(in)),
                         std::istreambuf_iterator<char>());
  // The command name (field 2) may hold spaces and parentheses: fields are
  // counted from the last ')'. utime and stime are fields 14 and 15.
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream rest(text.substr(paren + 1));
  std::string field;
  for (int i = 3; i <= 13; ++i) rest >> field;
  unsigned long long utime = 0, stime = 0;
  if (!(rest >> utime >> stime)) return -1;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double SelfCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Busy CPU seconds of the whole machine (user + nice + system + irq +
// softirq + steal, all CPUs) from /proc/stat; -1 when it cannot be read.
double MachineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0,
                     softirq = 0, steal = 0;
  if (!(in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >>
        steal) ||
      cpu != "cpu") {
    return -1;
  }
  return static_cast<double>(user + nice + system + irq + softirq + steal) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

// CPU times taken at the start and at the end of the measured window.
struct CpuSample {
  double machine = 0;  // busy seconds of every CPU, -1 = unreadable
  double self = 0;
  std::vector<double> watched;  // per --watch-pid, -1 = unreadable
};

CpuSample TakeCpuSample(const Options& o) {
  CpuSample sample;
  sample.machine = MachineBusySeconds();
  sample.self = SelfCpuSeconds();
  for (const auto& [name, pid] : o.watch_pids) {
    sample.watched.push_back(ProcessCpuSeconds(pid));
  }
  return sample;
}

uint32_t Percentile(const std::vector<uint32_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

int Run(const Options& o) {
  // Distinct channels: a local subchannel pool plus a distinguishing argument,
  // otherwise channels with identical arguments share one TCP connection.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<ThrottleService::Stub>> stubs;
  std::vector<std::unique_ptr<RateLimitService::Stub>> envoy_stubs;
  const auto connect_deadline =
      std::chrono::system_clock::now() + std::chrono::seconds(5);
  for (int i = 0; i < o.channels; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("traffik.loadgen.channel", i);
    channels.push_back(
        grpc::CreateCustomChannel(o.target, grpc::InsecureChannelCredentials(), args));
    if (!channels.back()->WaitForConnected(connect_deadline)) {
      std::fprintf(stderr, "traffik_loadgen: cannot connect to %s within 5s\n",
                   o.target.c_str());
      return 1;
    }
    stubs.push_back(ThrottleService::NewStub(channels.back()));
    envoy_stubs.push_back(RateLimitService::NewStub(channels.back()));
  }

  std::vector<std::string> ids;
  ids.reserve(o.keys);
  for (int i = 0; i < o.keys; ++i) ids.push_back("bench-key-" + std::to_string(i));

  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < o.threads; ++t) {
    workers.push_back(std::make_unique<Worker>(o, ids, t % o.keys));
  }
  for (int i = 0; i < o.concurrency; ++i) {
    workers[i % o.threads]->AddSlot(stubs[i % o.channels].get(),
                                    envoy_stubs[i % o.channels].get());
  }

  const Clock::time_point begin = Clock::now();
  const Clock::time_point measure_start = begin + std::chrono::milliseconds(o.warmup_ms);
  const Clock::time_point measure_end =
      measure_start + std::chrono::milliseconds(o.duration_ms);
  std::vector<std::thread> threads;
  for (auto& worker : workers) {
    threads.emplace_back([&worker, measure_start, measure_end] {
      worker->Run(measure_start, measure_end);
    });
  }
  // CPU over the measured window: the load generator's own (to show it is not
  // the bottleneck: compare with its threads) and each watched process'.
  CpuSample cpu_start, cpu_end;
  double window_s = 0;
  std::thread monitor([&] {
    std::this_thread::sleep_until(measure_start);
    const Clock::time_point sampled_start = Clock::now();
    cpu_start = TakeCpuSample(o);
    std::this_thread::sleep_until(measure_end);
    const Clock::time_point sampled_end = Clock::now();
    cpu_end = TakeCpuSample(o);
    window_s = std::chrono::duration<double>(sampled_end - sampled_start).count();
  });
  for (std::thread& thread : threads) thread.join();
  monitor.join();
  const double loadgen_cpu_s = cpu_end.self - cpu_start.self;
  // Every process' CPU (this one, the watched ones and any other) over the window.
  const double machine_cpu_s = cpu_start.machine < 0 || cpu_end.machine < 0
                                   ? -1
                                   : cpu_end.machine - cpu_start.machine;
  std::vector<double> watched_cpu_s;
  for (size_t i = 0; i < o.watch_pids.size(); ++i) {
    const double a = cpu_start.watched[i], b = cpu_end.watched[i];
    if (a < 0 || b < 0) {
      std::fprintf(stderr, "traffik_loadgen: cannot read the CPU time of %s (pid %d)\n",
                   o.watch_pids[i].first.c_str(), o.watch_pids[i].second);
    }
    watched_cpu_s.push_back(a < 0 || b < 0 ? -1 : b - a);
  }

  Tally total;
  for (auto& worker : workers) {
    Tally& t = worker->tally();
    total.calls += t.calls;
    total.all_ok_calls += t.all_ok_calls;
    total.allowed += t.allowed;
    total.throttled += t.throttled;
    for (int c = 0; c < kNumCodes; ++c) total.codes[c] += t.codes[c];
    total.latency_us.insert(total.latency_us.end(), t.latency_us.begin(),
                            t.latency_us.end());
  }
  std::vector<uint32_t>& lat = total.latency_us;
  std::sort(lat.begin(), lat.end());
  const double seconds = static_cast<double>(o.duration_ms) / 1000.0;
  const uint64_t ok_calls = total.codes[0];
  const uint64_t errors = total.calls - ok_calls;
  const int per_call = o.rpc == Rpc::kBatch ? o.batch_size : 1;
  const double calls_per_s = static_cast<double>(total.calls) / seconds;
  const double decisions_per_s = static_cast<double>(ok_calls) * per_call / seconds;
  double mean = 0;
  for (uint32_t v : lat) mean += v;
  if (!lat.empty()) mean /= static_cast<double>(lat.size());
  const uint32_t p50 = Percentile(lat, 0.50), p90 = Percentile(lat, 0.90),
                 p99 = Percentile(lat, 0.99), p999 = Percentile(lat, 0.999),
                 max = lat.empty() ? 0 : lat.back();

  const uint64_t all_decisions = total.all_ok_calls * static_cast<uint64_t>(per_call);
  if (o.json) {
    std::string cpu = "\"machine\":" + std::to_string(machine_cpu_s) +
                      ",\"loadgen\":" + std::to_string(loadgen_cpu_s);
    for (size_t i = 0; i < o.watch_pids.size(); ++i) {
      cpu += ",\"" + o.watch_pids[i].first + "\":" + std::to_string(watched_cpu_s[i]);
    }
    std::string errs;
    for (int c = 1; c < kNumCodes; ++c) {
      if (total.codes[c] == 0) continue;
      if (!errs.empty()) errs += ",";
      errs += "\"" + std::string(CodeName(c)) + "\":" + std::to_string(total.codes[c]);
    }
    std::printf(
        "{\"target\":\"%s\",\"rpc\":\"%s\",\"concurrency\":%d,\"channels\":%d,"
        "\"threads\":%d,\"batch_size\":%d,\"keys\":%d,\"duration_s\":%.3f,"
        "\"calls\":%llu,\"ok_calls\":%llu,\"calls_per_s\":%.1f,\"decisions_per_s\":%.1f,"
        "\"allowed\":%llu,\"throttled\":%llu,\"errors\":{%s},"
        "\"latency_us\":{\"p50\":%u,\"p90\":%u,\"p99\":%u,\"p999\":%u,\"max\":%u,"
        "\"mean\":%.1f},\"all_decisions\":%llu,\"window_s\":%.4f,\"cpu_s\":{%s}}\n",
        JsonEscape(o.target).c_str(), o.rpc_name.c_str(), o.concurrency, o.channels,
        o.threads, per_call, o.keys, seconds,
        static_cast<unsigned long long>(total.calls),
        static_cast<unsigned long long>(ok_calls), calls_per_s, decisions_per_s,
        static_cast<unsigned long long>(total.allowed),
        static_cast<unsigned long long>(total.throttled), errs.c_str(), p50, p90, p99,
        p999, max, mean, static_cast<unsigned long long>(all_decisions), window_s,
        cpu.c_str());
  } else {
    std::printf(
        "target=%s rpc=%s concurrency=%d channels=%d threads=%d batch_size=%d keys=%d "
        "duration=%.3fs\n",
        o.target.c_str(), o.rpc_name.c_str(), o.concurrency, o.channels, o.threads,
        per_call, o.keys, seconds);
    std::printf("calls/s=%.1f decisions/s=%.1f calls=%llu ok=%llu errors=%llu\n",
                calls_per_s, decisions_per_s,
                static_cast<unsigned long long>(total.calls),
                static_cast<unsigned long long>(ok_calls),
                static_cast<unsigned long long>(errors));
    for (int c = 1; c < kNumCodes; ++c) {
      if (total.codes[c] > 0) {
        std::printf("  error %s: %llu\n", CodeName(c),
                    static_cast<unsigned long long>(total.codes[c]));
      }
    }
    std::printf("allowed=%llu throttled=%llu\n",
                static_cast<unsigned long long>(total.allowed),
                static_cast<unsigned long long>(total.throttled));
    std::printf("latency_us p50=%u p90=%u p99=%u p99.9=%u max=%u mean=%.1f\n", p50, p90,
                p99, p999, max, mean);
    std::printf("cpu_s over %.3fs: machine=%.3f loadgen=%.3f (%d threads)", window_s,
                machine_cpu_s, loadgen_cpu_s, o.threads);
    for (size_t i = 0; i < o.watch_pids.size(); ++i) {
      std::printf(" %s=%.3f", o.watch_pids[i].first.c_str(), watched_cpu_s[i]);
    }
    std::printf("\nall_decisions=%llu\n", static_cast<unsigned long long>(all_decisions));
  }
  return ok_calls > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's abseil checks every mutex for deadlock cycles; the load generator
  // should spend its CPU on load, as traffikd and the no-op server do.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  Options options;
  bool help = false;
  if (!ParseArgs(argc, argv, options, &help)) return 2;
  if (help) {
    Usage(stdout);
    return 0;
  }
  return Run(options);
}

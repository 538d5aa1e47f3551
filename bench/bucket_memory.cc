// Measures the memory backend's resident memory per bucket: stores N buckets
// (default 1,000,000) with realistic keys and reports the RSS growth.
//
//   build/bench/traffik_bucket_memory [N]
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "backend/memory/memory_backend.h"
#include "clock/clock.h"

namespace {

long RssBytes() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return pages_resident * sysconf(_SC_PAGESIZE);
}

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 1'000'000;
  traffik::MemoryBackendOptions options;
  options.max_buckets = static_cast<uint64_t>(n) * 2;
  options.sweep_interval_ms = 0;
  traffik::FakeClock clock;
  const long before = RssBytes();
  auto* backend = new traffik::MemoryBackend(clock, options);
  const traffik::Rate rate{100, 3'600'000};
  std::string key;
  for (long i = 0; i < n; ++i) {
    // A typical key: tenant prefix, uid, "client address:route path".
    key =
        absl::StrCat("default:{api:203.0.", (i >> 8) & 255, ".", i & 255, ":/v1/search}");
    if (i >= 65536) key = absl::StrCat("default:{api:user:", i, "}");
    (void)backend->DecideNow(key, rate, 1);
  }
  const long after = RssBytes();
  std::printf(
      "buckets=%llu rss_growth_bytes=%ld bytes_per_bucket=%.1f\n",
      static_cast<unsigned long long>(backend->bucket_count()), after - before,
      static_cast<double>(after - before) / static_cast<double>(backend->bucket_count()));
  delete backend;
  return 0;
}

#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "base/mutex.h"
#include "bucket/token_bucket.h"
#include "clock/clock.h"

namespace traffik {

// Where finished log lines go (one line, no trailing newline).
using LogSink = std::function<void(absl::string_view line)>;

// The process's sink: writes "traffikd: <line>\n" to stderr in one write.
void WriteLogLineToStderr(absl::string_view line);

// How many lines one call site may write: `burst` at once, refilled
// continuously at `burst` per `interval_ms` (a token bucket on the clock).
struct LogLimit {
  uint64_t burst = 10;
  int64_t interval_ms = 60'000;
};

// The longest line written; a longer one is cut and says its full length.
inline constexpr size_t kMaxLogLineBytes = 1024;

// The lines of one call site, rate-limited: a line over the limit is dropped
// and counted; the next line let through is preceded by one summary line
// "<name>: suppressed K similar lines". Every line is made safe first: bytes
// outside printable ASCII (newlines, other control characters, non-ASCII)
// become \xNN and the line is cut at kMaxLogLineBytes, so whatever a caller
// smuggles into a message cannot forge or flood log lines.
//
// Thread-safe; the sink is called with the site's lock held, so a site's lines
// come out in order. `clock` must outlive this object.
class RateLimitedLog {
 public:
  RateLimitedLog(std::string name, LogLimit limit, const Clock& clock, LogSink sink);
  RateLimitedLog(const RateLimitedLog&) = delete;
  RateLimitedLog& operator=(const RateLimitedLog&) = delete;

  // Writes `line` if the site's budget allows, else counts it as suppressed.
  void Write(absl::string_view line);

 private:
  const std::string name_;
  const Rate rate_;
  const Clock& clock_;
  const LogSink sink_;
  Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  BucketState bucket_ ABSL_GUARDED_BY(mu_);
  uint64_t suppressed_ ABSL_GUARDED_BY(mu_) = 0;
};

// One RateLimitedLog per call site, created on first use and named by the
// site (e.g. "redis_backend.cc:389"). The number of sites is bounded
// (kMaxSites); any further site shares one limiter named "other sites", so
// even an unbounded set of site names cannot grow memory or floods.
//
// Thread-safe.
class LogSites {
 public:
  static constexpr size_t kMaxSites = 256;

  LogSites(LogLimit limit, const Clock& clock, LogSink sink);
  LogSites(const LogSites&) = delete;
  LogSites& operator=(const LogSites&) = delete;

  void Write(absl::string_view site, absl::string_view line);

 private:
  RateLimitedLog& Site(absl::string_view site);

  const LogLimit limit_;
  const Clock& clock_;
  const LogSink sink_;
  Mutex mu_;
  // Values are never removed, so a reference outlives the lock.
  absl::flat_hash_map<std::string, std::unique_ptr<RateLimitedLog>> sites_
      ABSL_GUARDED_BY(mu_);
  RateLimitedLog other_;
};

// The process-wide sites: stderr, the steady clock, the default LogLimit.
LogSites& ProcessLog();

// Logs `line` (a std::string or string_view expression) to ProcessLog(),
// rate-limited per call site (file:line). Use it for every line a caller's
// traffic can trigger.
#define TRAFFIK_LOG_LIMITED(line) \
  ::traffik::ProcessLog().Write(TRAFFIK_LOG_SITE_(__FILE_NAME__, __LINE__), (line))
#define TRAFFIK_LOG_SITE_(file, line) TRAFFIK_LOG_SITE2_(file, line)
#define TRAFFIK_LOG_SITE2_(file, line) file ":" #line

}  // namespace traffik

#include "base/log.h"

#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace traffik {
namespace {

// `line` with every byte outside printable ASCII as \xNN, cut at
// kMaxLogLineBytes of output.
std::string SafeLine(absl::string_view line) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(std::min(line.size(), kMaxLogLineBytes));
  size_t used = 0;
  for (; used < line.size(); ++used) {
    const auto c = static_cast<unsigned char>(line[used]);
    const size_t width = (c >= 0x20 && c < 0x7f) ? 1 : 4;
    if (out.size() + width > kMaxLogLineBytes) break;
    if (width == 1) {
      out.push_back(static_cast<char>(c));
    } else {
      out.append("\\x");
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  if (used < line.size()) {
    absl::StrAppend(&out, "... (", line.size(), " bytes)");
  }
  return out;
}

}  // namespace

void WriteLogLineToStderr(absl::string_view line) {
  std::string out = absl::StrCat("traffikd: ", line, "\n");
  // One write(2) per line, so concurrent lines never interleave.
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::write(STDERR_FILENO, out.data() + done, out.size() - done);
    if (n <= 0) return;  // nowhere to report it
    done += static_cast<size_t>(n);
  }
}

RateLimitedLog::RateLimitedLog(std::string name, LogLimit limit, const Clock& clock,
                               LogSink sink)
    : name_(std::move(name)),
      rate_{limit.burst == 0 ? 1 : limit.burst,
            limit.interval_ms <= 0 ? 1 : static_cast<uint64_t>(limit.interval_ms)},
      clock_(clock),
      sink_(std::move(sink)) {}

void RateLimitedLog::Write(absl::string_view line) {
  MutexLock lock(&mu_);
  const Decision d =
      Decide(started_ ? &bucket_ : nullptr, rate_, 1, clock_.NowMs(), &bucket_);
  started_ = true;
  if (!d.allowed) {
    ++suppressed_;
    return;
  }
  if (suppressed_ > 0) {
    sink_(absl::StrCat(name_, ": suppressed ", suppressed_, " similar line",
                       suppressed_ == 1 ? "" : "s"));
    suppressed_ = 0;
  }
  sink_(SafeLine(line));
}

LogSites::LogSites(LogLimit limit, const Clock& clock, LogSink sink)
    : limit_(limit),
      clock_(clock),
      sink_(std::move(sink)),
      other_("other sites", limit, clock, sink_) {}

RateLimitedLog& LogSites::Site(absl::string_view site) {
  MutexLock lock(&mu_);
  auto it = sites_.find(site);
  if (it != sites_.end()) return *it->second;
  if (sites_.size() >= kMaxSites) return other_;
  std::string name = SafeLine(site);
  auto log = std::make_unique<RateLimitedLog>(name, limit_, clock_, sink_);
  RateLimitedLog& ref = *log;
  sites_.emplace(std::string(site), std::move(log));
  return ref;
}

void LogSites::Write(absl::string_view site, absl::string_view line) {
  Site(site).Write(line);
}

LogSites& ProcessLog() {
  static LogSites* sites =
      new LogSites(LogLimit{}, SteadyClock::Get(), &WriteLogLineToStderr);
  return *sites;
}

}  // namespace traffik

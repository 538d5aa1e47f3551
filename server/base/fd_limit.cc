#include "base/fd_limit.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace traffik {
namespace {

uint64_t FromRlim(rlim_t value) {
  return value == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(value);
}

}  // namespace

absl::StatusOr<OpenFileLimit> GetOpenFileLimit() {
  struct rlimit limit {};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(
        absl::StrCat("getrlimit(RLIMIT_NOFILE): ", std::strerror(errno)));
  }
  return OpenFileLimit{FromRlim(limit.rlim_cur), FromRlim(limit.rlim_max)};
}

absl::StatusOr<OpenFileLimit> RaiseOpenFileLimitToHard() {
  struct rlimit limit {};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(
        absl::StrCat("getrlimit(RLIMIT_NOFILE): ", std::strerror(errno)));
  }
  if (limit.rlim_cur != limit.rlim_max) {
    const rlim_t before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      return absl::InternalError(absl::StrCat(
          "setrlimit(RLIMIT_NOFILE, ", FromRlim(limit.rlim_max),
          "): ", std::strerror(errno), " (soft limit stays ", FromRlim(before), ")"));
    }
  }
  return GetOpenFileLimit();
}

}  // namespace traffik

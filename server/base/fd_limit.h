#pragma once

#include <cstdint>

#include "absl/status/statusor.h"

namespace traffik {

// The process's open-file limits (RLIMIT_NOFILE); RLIM_INFINITY reads as
// UINT64_MAX.
struct OpenFileLimit {
  uint64_t soft = 0;
  uint64_t hard = 0;
};

// The current limits. kInternal if getrlimit fails.
absl::StatusOr<OpenFileLimit> GetOpenFileLimit();

// Raises the soft open-file limit to the hard one and returns the limits in
// force afterwards. Each accepted connection is a file descriptor: a soft
// limit of 1024 (systemd's and most shells' default, with a hard limit far
// above) caps a server near 1000 clients. Raising the soft limit up to the
// hard one needs no privilege; the hard limit is left as it is (the operator
// sets it: LimitNOFILE=, ulimit -Hn, the container runtime). Never lowers a
// limit. kInternal if getrlimit/setrlimit fails (the limits are unchanged).
absl::StatusOr<OpenFileLimit> RaiseOpenFileLimitToHard();

}  // namespace traffik

#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace traffik::testing_support {

// Starts `binary` with `args` (argv[1..]) as a child process: stdin from
// /dev/null, stdout and stderr to `output_fd` (not closed here), default
// signal handling and an empty signal mask, and PR_SET_PDEATHSIG(SIGKILL), so
// the child dies with the thread that forked it and nothing outlives a test.
// Everything the child needs is prepared before fork(): after it, only
// async-signal-safe calls (test processes have gRPC threads).
absl::StatusOr<pid_t> SpawnChild(const std::string& binary,
                                 const std::vector<std::string>& args, int output_fd);

}  // namespace traffik::testing_support

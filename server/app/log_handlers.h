#pragma once

#include "base/log.h"

namespace traffik {

// Routes gRPC's (gpr_log) and protobuf's log lines through `sites` (one
// rate-limited site per source file:line), so neither library can flood
// stderr however a caller's traffic makes it complain. Sets gRPC's verbosity
// to ERROR unless the GRPC_VERBOSITY environment variable chooses one.
//
// Process-wide; call once at startup, before any server starts. `sites` must
// outlive every later gRPC or protobuf log call (ProcessLog() does).
void InstallLogHandlers(LogSites& sites);

}  // namespace traffik

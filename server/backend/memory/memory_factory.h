#pragma once

#include <memory>

#include "backend/registry.h"

namespace traffik {

// The factory of the in-process backend, `backend: memory` (no settings map:
// its budget is the configuration's `memory:` section, each tenant's share
// its `tenants[].memory`). All memory tenants share one MemoryBackend, each
// in its own partition; a reload keeps it (and every bucket), updates the
// shares, and drops the partitions of tenants that are gone.
std::shared_ptr<const BackendFactory> MemoryBackendFactory();

}  // namespace traffik

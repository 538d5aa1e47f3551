#pragma once

#include "backend/registry.h"

namespace traffik {

// Registers every built-in backend's factory in `registry` (idempotent).
// Adding a backend = its folder under backend/ + one line here.
void RegisterBuiltinBackends(BackendRegistry& registry = BackendRegistry::Global());

}  // namespace traffik

#include "app/backends.h"

#include "backend/memory/memory_factory.h"
#include "backend/redis/redis_factory.h"

namespace traffik {

// An explicit list, not self-registering static objects: the backends are
// static libraries, and the linker drops an object file nothing refers to,
// registration and all. Calling each factory from here keeps them linked.
void RegisterBuiltinBackends(BackendRegistry& registry) {
  registry.Register(MemoryBackendFactory());
  registry.Register(RedisBackendFactory());
}

}  // namespace traffik

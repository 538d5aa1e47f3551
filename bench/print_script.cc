// traffik_print_script: prints the Redis token-bucket Lua script traffikd
// sends (traffik::RedisBucketScript()), e.g. for `redis-cli SCRIPT LOAD`.
#include <cstdio>
#include <string>

#include "backend/redis/bucket_script.h"

int main() {
  const std::string& script = traffik::RedisBucketScript();
  std::fwrite(script.data(), 1, script.size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

// traffik_print_script: prints a Redis token-bucket Lua script traffikd sends,
// e.g. for `redis-cli SCRIPT LOAD`: with no argument the single-decision
// script (traffik::RedisBucketScript()), with `each` the script of a
// coalesced call (traffik::RedisEachScript()).
#include <cstdio>
#include <cstring>
#include <string>

#include "backend/redis/bucket_script.h"

int main(int argc, char** argv) {
  if (argc > 2 || (argc == 2 && std::strcmp(argv[1], "each") != 0)) {
    std::fprintf(stderr, "usage: traffik_print_script [each]\n");
    return 2;
  }
  const std::string& script =
      argc == 2 ? traffik::RedisEachScript() : traffik::RedisBucketScript();
  std::fwrite(script.data(), 1, script.size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

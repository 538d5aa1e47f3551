// Uses the installed traffik::client: one Check against a target where
// nothing listens, failing open (kAllow), so it runs without a server.
#include <traffik/client.h>

#include <chrono>
#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  traffik::ClientOptions options;
  options.target = argc > 1 ? argv[1] : "127.0.0.1:1";
  options.deadline = std::chrono::milliseconds(500);
  options.failure_policy = traffik::FailurePolicy::kAllow;
  auto client = traffik::Client::Create(options);
  if (!client.ok()) {
    std::fprintf(stderr, "create: %s\n", client.status().ToString().c_str());
    return 2;
  }
  traffik::ThrottleRequest request;
  request.identifier = "user:42";
  request.throttle_uid = "consumer";
  request.spec = traffik::ThrottleSpec{10, std::chrono::milliseconds(1000)};
  auto result = (*client)->Check(request);
  if (!result.ok()) {
    std::fprintf(stderr, "check: %s\n", result.status().ToString().c_str());
    return 2;
  }
  const bool by_policy =
      result->source == traffik::ThrottleResult::Source::kFailurePolicy;
  std::printf("consumer: %s by %s, failures=%llu\n",
              result->allowed ? "allowed" : "refused",
              by_policy ? "failure policy" : "server",
              static_cast<unsigned long long>((*client)->stats().failures));
  return result->allowed && by_policy ? 0 : 1;
}

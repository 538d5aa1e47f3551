// The README's testing example: a throttled handler unit-tested with the
// in-process client and a fake clock, no traffikd.
#include <traffik/testing/in_process_client.h>

#include <cassert>
#include <chrono>
#include <memory>

int main() {
  using std::chrono::seconds;
  auto clock = std::make_shared<traffik::testing::FakeClock>();
  auto client =
      traffik::testing::InProcessClient::Create(
          {.throttles = {{"login", {.limit = 3, .period = seconds(60)}}}, .clock = clock})
          .value();

  traffik::ThrottleRequest login{.identifier = "user:alice", .throttle_uid = "login"};
  for (int i = 0; i < 3; ++i) assert(client->Check(login)->allowed);
  traffik::ThrottleResult refused = client->Check(login).value();
  assert(!refused.allowed && refused.wait == seconds(20));

  clock->Advance(seconds(20));  // one token back
  assert(client->Check(login)->allowed);
}

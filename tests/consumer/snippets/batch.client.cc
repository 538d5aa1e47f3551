// The README's batch example: burst and sustained limits on one action,
// all or nothing, with the one CheckBatch form.
#include <traffik/client.h>

#include <chrono>
#include <cstdio>

int main() {
  auto client = traffik::Client::Create({.target = "127.0.0.1:50051"}).value();
  using std::chrono::hours;
  using std::chrono::minutes;
  absl::StatusOr<traffik::BatchResult> batch =
      client->CheckBatch({{.identifier = "user:42",
                           .throttle_uid = "upload_burst",
                           .spec = traffik::ThrottleSpec{10, minutes(1)}},
                          {.identifier = "user:42",
                           .throttle_uid = "upload_daily",
                           .spec = traffik::ThrottleSpec{500, hours(24)}}},
                         {.all_or_nothing = true});
  if (!batch.ok()) {
    std::fprintf(stderr, "%s\n", batch.status().ToString().c_str());
    return 2;
  }
  if (!batch->applied) return 1;  // refused: nothing was taken from either limit
  for (const traffik::ThrottleResult& result : *batch) {
    std::printf("remaining %llu\n", static_cast<unsigned long long>(result.remaining));
  }
  return 0;
}

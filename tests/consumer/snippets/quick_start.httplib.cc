// The README's quick example: a cpp-httplib route limited to 5 requests per
// 10 s per client address, failing open while traffikd is unreachable.
#include <httplib.h>
#include <traffik/adapters/httplib.h>

#include <chrono>

int main() {
  auto client =
      traffik::Client::Create(
          {.target = "127.0.0.1:50051", .failure_policy = traffik::FailurePolicy::kAllow})
          .value();
  traffik::HttpThrottler throttler(client);
  traffik::HttpThrottle search(
      {.uid = "search", .spec = traffik::ThrottleSpec{5, std::chrono::seconds(10)}});

  httplib::Server server;
  server.Get("/search", traffik::httplib_adapter::Throttled(
                            throttler,
                            [](const httplib::Request&, httplib::Response& response) {
                              response.set_content("results", "text/plain");
                            },
                            search));
  server.listen("127.0.0.1", 8080);
}

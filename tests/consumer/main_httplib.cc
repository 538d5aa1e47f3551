// Uses the installed traffik::httplib target: the httplib decorator on the
// in-process client (no traffikd), driven with httplib request objects. Exit
// 0 when the third request of a 2-per-hour route is refused with a 429.
#include <httplib.h>
#include <traffik/adapters/httplib.h>
#include <traffik/testing/in_process_client.h>

#include <chrono>
#include <cstdio>
#include <memory>

int main() {
  auto clock = std::make_shared<traffik::testing::FakeClock>();
  auto client = traffik::testing::InProcessClient::Create({.clock = clock});
  if (!client.ok()) {
    std::fprintf(stderr, "create: %s\n", client.status().ToString().c_str());
    return 2;
  }
  traffik::HttpThrottler throttler(*client);
  traffik::HttpThrottle search(
      {.uid = "search", .spec = traffik::ThrottleSpec{2, std::chrono::hours(1)}});
  httplib::Server::Handler handler = traffik::httplib_adapter::Throttled(
      throttler,
      [](const httplib::Request&, httplib::Response& response) {
        response.status = 200;
        response.set_content("ok", "text/plain");
      },
      search);
  int statuses[3] = {};
  std::string retry_after;
  for (int& status : statuses) {
    httplib::Request request;
    request.method = "GET";
    request.path = "/search";
    request.remote_addr = "203.0.113.9";
    httplib::Response response;
    handler(request, response);
    status = response.status;
    retry_after = response.get_header_value("Retry-After");
  }
  std::printf("consumer_httplib: %d %d %d, Retry-After %s\n", statuses[0], statuses[1],
              statuses[2], retry_after.c_str());
  return statuses[0] == 200 && statuses[1] == 200 && statuses[2] == 429 &&
                 retry_after == "1800"
             ? 0
             : 1;
}

// traffik::beast carries Boost's headers: the WebSocket throttle and the
// Beast adapter's translation of a refusal into a close frame, on the
// in-process client.
#include <traffik/adapters/beast.h>
#include <traffik/testing/in_process_client.h>

#include <boost/beast/websocket/rfc6455.hpp>
#include <chrono>
#include <cstdio>

int main() {
  auto client = traffik::testing::InProcessClient::Create().value();
  traffik::WebSocketThrottle messages(
      client,
      {.uid = "ws_messages", .spec = traffik::ThrottleSpec{1, std::chrono::minutes(1)}});
  traffik::WebSocketConnection connection{
      .id = "c1", .upgrade = {.path = "/ws", .peer_address = "::1"}};
  messages.Check(connection);
  traffik::WebSocketVerdict verdict = messages.Check(connection);
  if (verdict.close) {
    boost::beast::websocket::close_reason reason =
        traffik::beast_adapter::ToCloseReason(*verdict.close);
    std::printf("closed %d\n", static_cast<int>(reason.code));
  }
}

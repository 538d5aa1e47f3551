// The main() of the test binaries that link the server: registers the
// built-in backends (as traffikd's main does) so ParseConfig and
// Server::Start know them, then runs the tests.
#include "app/backends.h"
#include "gtest/gtest.h"

int main(int argc, char** argv) {
  traffik::RegisterBuiltinBackends();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

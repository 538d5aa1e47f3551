// ConfigWatcher: inotify on the config's directory, debounced.
#include "app/config_watcher.h"

#include <stdio.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace traffik {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

class ConfigWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/traffik-watch-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    watcher_.reset();
    fs::remove_all(dir_);
  }
  void Watch(const std::string& path) {
    auto watcher = ConfigWatcher::Start(path, milliseconds(100), [this] { ++calls_; });
    ASSERT_TRUE(watcher.ok()) << watcher.status();
    watcher_ = *std::move(watcher);
  }
  // Waits at most 5 s for at least `n` calls.
  bool WaitForCalls(int n) {
    for (int i = 0; i < 500 && calls_.load() < n; ++i) {
      std::this_thread::sleep_for(milliseconds(10));
    }
    return calls_.load() >= n;
  }
  static void WriteFile(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::trunc) << text;
  }
  static std::string ReadFile(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  std::string dir_;
  std::atomic<int> calls_{0};
  std::unique_ptr<ConfigWatcher> watcher_;
};

// Verifies that a Kubernetes ConfigMap update is seen: the volume holds
// `traffik.yaml -> ..data/traffik.yaml` and `..data -> ..<timestamp>`, and an
// update renames a new `..data` symlink over the old one (the watched name
// itself never changes).
TEST_F(ConfigWatcherTest, SeesConfigMapSymlinkSwap) {
  fs::create_directory(dir_ + "/..2026_01_01_a");
  WriteFile(dir_ + "/..2026_01_01_a/traffik.yaml", "old\n");
  fs::create_directory_symlink("..2026_01_01_a", dir_ + "/..data");
  fs::create_symlink("..data/traffik.yaml", dir_ + "/traffik.yaml");
  Watch(dir_ + "/traffik.yaml");

  fs::create_directory(dir_ + "/..2026_01_01_b");
  WriteFile(dir_ + "/..2026_01_01_b/traffik.yaml", "new\n");
  fs::create_directory_symlink("..2026_01_01_b", dir_ + "/..data_tmp");
  ASSERT_EQ(rename((dir_ + "/..data_tmp").c_str(), (dir_ + "/..data").c_str()), 0);
  fs::remove_all(dir_ + "/..2026_01_01_a");
  ASSERT_TRUE(WaitForCalls(1));
  EXPECT_EQ(ReadFile(dir_ + "/traffik.yaml"), "new\n");
}

// Verifies a change in an extra directory (the envoy rule files') is seen,
// as a ConfigMap symlink swap there; a missing one fails the start.
TEST_F(ConfigWatcherTest, SeesExtraDirectory) {
  WriteFile(dir_ + "/traffik.yaml", "x\n");
  const std::string rl = dir_ + "/rl";
  fs::create_directory(rl);
  auto watcher = ConfigWatcher::Start(dir_ + "/traffik.yaml", milliseconds(100),
                                      [this] { ++calls_; }, {rl});
  ASSERT_TRUE(watcher.ok()) << watcher.status();
  watcher_ = *std::move(watcher);
  fs::create_directory(rl + "/..2026_01_01_b");
  WriteFile(rl + "/..2026_01_01_b/a.yaml", "domain: a\n");
  fs::create_directory_symlink("..2026_01_01_b", rl + "/..data");
  ASSERT_TRUE(WaitForCalls(1));
  EXPECT_FALSE(ConfigWatcher::Start(dir_ + "/traffik.yaml", milliseconds(100), [] {},
                                    {dir_ + "/missing"})
                   .ok());
}

// Verifies that an editor's save (write a temp file, rename it over) is seen.
TEST_F(ConfigWatcherTest, SeesRenameOver) {
  WriteFile(dir_ + "/traffik.yaml", "old\n");
  Watch(dir_ + "/traffik.yaml");
  WriteFile(dir_ + "/.traffik.yaml.swp", "new\n");
  ASSERT_EQ(
      rename((dir_ + "/.traffik.yaml.swp").c_str(), (dir_ + "/traffik.yaml").c_str()), 0);
  EXPECT_TRUE(WaitForCalls(1));
}

// Verifies that a burst of changes closer together than the debounce gives
// one call, after the burst.
TEST_F(ConfigWatcherTest, DebouncesBurst) {
  WriteFile(dir_ + "/traffik.yaml", "0\n");
  Watch(dir_ + "/traffik.yaml");
  for (int i = 1; i <= 5; ++i) {
    WriteFile(dir_ + "/traffik.yaml", std::to_string(i) + "\n");
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_TRUE(WaitForCalls(1));
  std::this_thread::sleep_for(milliseconds(300));  // 3 debounce periods of quiet
  EXPECT_EQ(calls_.load(), 1);
}

// Verifies that a directory that does not exist is an error, not a thread.
TEST_F(ConfigWatcherTest, MissingDirectoryFails) {
  EXPECT_FALSE(
      ConfigWatcher::Start(dir_ + "/nope/traffik.yaml", milliseconds(100), [] {}).ok());
}

}  // namespace
}  // namespace traffik

#pragma once

// kUnderSanitizer: true when this test binary is built with AddressSanitizer
// or ThreadSanitizer (gcc defines __SANITIZE_*__, clang answers
// __has_feature). Their allocators and shadow memory change what RSS
// measures, so memory-bound assertions are checked in plain builds only.
namespace traffik::testing {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kUnderSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kUnderSanitizer = true;
#else
inline constexpr bool kUnderSanitizer = false;
#endif
#else
inline constexpr bool kUnderSanitizer = false;
#endif

}  // namespace traffik::testing

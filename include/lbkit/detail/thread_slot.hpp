// SPDX-License-Identifier: MIT
// thread_slot: a small number for the calling thread, held by no other live thread, so that
// per-thread counter shards (backend_state's request totals) have one writer each and can be
// updated with a plain load and store instead of a locked read-modify-write.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <thread>

namespace lbkit::detail {

// Slots 1 .. count() are owned, one per thread, from the thread's first get() until it
// exits. Threads beyond count() at once share slot 0 (shared) for their whole life; writers
// there must use atomic read-modify-writes. Thread safety: thread-safe.
class thread_slot {
 public:
  static constexpr std::uint32_t shared = 0;

  // Owned slots: one per hardware thread, at most 64, fixed at the first call.
  static std::uint32_t count() noexcept {
    static const std::uint32_t n =
        std::clamp<std::uint32_t>(std::thread::hardware_concurrency(), 1, 64);
    return n;
  }

  // The calling thread's slot, in [0, count()]. Complexity: one thread-local load; the
  // first call of a thread takes a slot with a CAS.
  static std::uint32_t get() noexcept {
    const std::uint32_t s = mine_;
    return s != 0 ? s - 1 : acquire();
  }

 private:
  // Gives the slot back when the thread exits; anything the thread counts after that (in
  // another thread-local's destructor) goes to the shared slot.
  struct releaser {
    std::uint32_t slot;
    ~releaser() {
      taken_.fetch_and(~(std::uint64_t{1} << (slot - 1)), std::memory_order_release);
      mine_ = shared + 1;
    }
  };

  [[gnu::noinline]] static std::uint32_t acquire() noexcept {
    const std::uint32_t n = count();
    const std::uint64_t all = n == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << n) - 1;
    std::uint64_t t = taken_.load(std::memory_order_relaxed);
    while (true) {
      const std::uint64_t free = ~t & all;
      if (free == 0) {  // every slot is held: share
        mine_ = shared + 1;
        return shared;
      }
      const auto bit = static_cast<std::uint32_t>(std::countr_zero(free));
      // acquire: this thread's writes to the slot's shards come after the last holder's.
      if (taken_.compare_exchange_weak(t, t | std::uint64_t{1} << bit, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        static thread_local releaser r{bit + 1};
        mine_ = bit + 2;
        return bit + 1;
      }
    }
  }

  static inline std::atomic<std::uint64_t> taken_{0};            // bit k: slot k + 1 is held
  static inline constinit thread_local std::uint32_t mine_ = 0;  // slot + 1; 0: none yet
};

}  // namespace lbkit::detail

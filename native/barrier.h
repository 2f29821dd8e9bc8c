// membarrier(2): the heavy half of the asymmetric fences of docs/LAYOUT.md §3.
#pragma once

#include <napi.h>

namespace shmbus {

// membarrierRegister(): QUERY, then REGISTER_GLOBAL_EXPEDITED. True when this
// process is registered (its threads take part in every later
// GLOBAL_EXPEDITED barrier of any process); false when the kernel (< 4.16) or
// a seccomp filter does not offer it. Never throws.
Napi::Value MembarrierRegister(const Napi::CallbackInfo& info);

// membarrierGlobal(): GLOBAL_EXPEDITED. On return every running thread of
// every registered process has passed a full memory barrier. Throws a system
// error (syscall "membarrier") if the kernel refuses it.
Napi::Value MembarrierGlobal(const Napi::CallbackInfo& info);

}  // namespace shmbus

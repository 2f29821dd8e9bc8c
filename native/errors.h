// Errors shaped like Node's own system errors.
//
// A thrown error is a plain `Error` whose message is
// `${syscall} ${CODE}` or `${syscall} ${CODE} ${path}` (plus an optional
// ` (detail)` suffix), carrying the properties `code` (errno name, e.g.
// 'ENOENT'), `errno` (the positive errno number), `syscall` and, when a file is
// involved, `path`.
#ifndef SHMBUS_ERRORS_H
#define SHMBUS_ERRORS_H

#include <napi.h>

namespace shmbus {

// Name of an errno value ("ENOENT"); "UNKNOWN" if the C library has none.
const char* ErrnoName(int err);

// Builds the error object. `path` and `detail` may be null.
Napi::Error SystemError(Napi::Env env, int err, const char* syscall, const char* path = nullptr,
                        const char* detail = nullptr);

// Builds and throws it (as a C++ Napi::Error: this addon is built with
// NAPI_CPP_EXCEPTIONS, so the exception becomes a JS exception when it leaves
// the binding). Never returns.
[[noreturn]] void ThrowSystemError(Napi::Env env, int err, const char* syscall, const char* path = nullptr,
                                   const char* detail = nullptr);

// Like ThrowSystemError but with a free-form message; code/errno/syscall/path
// are still attached.
[[noreturn]] void ThrowSystemErrorWithMessage(Napi::Env env, int err, const char* syscall, const char* path,
                                              const std::string& message);

[[noreturn]] void ThrowTypeError(Napi::Env env, const std::string& message);
[[noreturn]] void ThrowRangeError(Napi::Env env, const std::string& message);

}  // namespace shmbus

#endif  // SHMBUS_ERRORS_H

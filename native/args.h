// Minimal argument checks shared by the bindings. Wrong types throw TypeError,
// values of the right type but outside the allowed range throw RangeError
// (unless the caller needs an errno-style error instead).
#ifndef SHMBUS_ARGS_H
#define SHMBUS_ARGS_H

#include <napi.h>

#include <cmath>
#include <cstring>
#include <string>

#include "errors.h"

namespace shmbus {

// 2^53 - 1: every integer up to here is exact in a double.
constexpr double kMaxSafeInteger = 9007199254740991.0;

inline Napi::Value Arg(const Napi::CallbackInfo& info, size_t index) {
  return index < info.Length() ? info[index] : info.Env().Undefined();
}

// A path string without embedded NUL bytes (they would silently cut the path).
inline std::string RequirePath(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value v = Arg(info, index);
  if (!v.IsString()) ThrowTypeError(info.Env(), std::string("shmbus: ") + name + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.empty()) ThrowTypeError(info.Env(), std::string("shmbus: ") + name + " must not be empty");
  if (std::memchr(s.data(), '\0', s.size()) != nullptr)
    ThrowTypeError(info.Env(), std::string("shmbus: ") + name + " must not contain NUL bytes");
  return s;
}

inline double RequireNumber(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value v = Arg(info, index);
  if (!v.IsNumber()) ThrowTypeError(info.Env(), std::string("shmbus: ") + name + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

inline bool IsSafeInteger(double d) { return std::isfinite(d) && std::trunc(d) == d && std::fabs(d) <= kMaxSafeInteger; }

inline Napi::ArrayBuffer RequireArrayBuffer(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value v = Arg(info, index);
  if (!v.IsArrayBuffer()) ThrowTypeError(info.Env(), std::string("shmbus: ") + name + " must be an ArrayBuffer");
  return v.As<Napi::ArrayBuffer>();
}

inline bool IsDetached(Napi::Env env, Napi::ArrayBuffer buffer) {
  bool detached = false;
  napi_status status = napi_is_detached_arraybuffer(env, buffer, &detached);
  NAPI_THROW_IF_FAILED(env, status, false);
  return detached;
}

// Byte offset of an aligned 32-bit word inside `buffer`.
inline size_t RequireWordOffset(const Napi::CallbackInfo& info, size_t index, Napi::ArrayBuffer buffer) {
  double d = RequireNumber(info, index, "byteOffset");
  if (!IsSafeInteger(d) || d < 0) ThrowRangeError(info.Env(), "shmbus: byteOffset must be a non-negative integer");
  size_t length = buffer.ByteLength();
  if (d + 4 > static_cast<double>(length))
    ThrowRangeError(info.Env(), "shmbus: byteOffset " + std::to_string(static_cast<unsigned long long>(d)) +
                                    " is outside the buffer (byteLength " + std::to_string(length) + ")");
  size_t offset = static_cast<size_t>(d);
  if (offset % 4 != 0) ThrowRangeError(info.Env(), "shmbus: byteOffset must be a multiple of 4");
  return offset;
}

}  // namespace shmbus

#endif  // SHMBUS_ARGS_H

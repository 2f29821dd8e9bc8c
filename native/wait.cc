// futexWake, the NativeWaiter class (createWaiter), processStartTime.
//
// ───────────────────────────── NativeWaiter design ─────────────────────────────
// Each waiter owns one std::thread and one thread-safe function (TSFN).
//
//   JS thread                                waiter thread
//   ─────────                                ─────────────
//   wait(expected, timeout):                 sleeps on core->cv until armed
//     armed = true, TSFN Ref, self Ref  ───> FUTEX_WAIT(word, expected, slice)
//                                            ... Woken / TimedOut / NotEqual
//   Deliver() (TSFN call_js)           <───  posts the result through the TSFN
//     armed = false, callback(result),
//     TSFN Unref (unless re-armed), self Unref
//
// * The futex is shared (no FUTEX_PRIVATE_FLAG): the word lives in a MAP_SHARED
//   file mapping and is woken by other processes.
// * The TSFN keeps the event loop alive only while armed: it is unref'd when
//   created, Ref'd by wait() and Unref'd after the result has been delivered.
//   All Ref/Unref calls happen on the JS thread.
// * While armed the waiter also holds a strong reference to its own JS object
//   (ObjectWrap::Ref), so an armed waiter that JS dropped is not collected
//   before its callback ran; and it holds a reference to the ArrayBuffer for
//   its whole life, so the mapping cannot be collected under the thread.
//   unmap() refuses (EBUSY) while a waiter on the mapping is armed.
//
// close() and the stop race. close() sets `stop` and must get the thread out
// of FUTEX_WAIT. The thread checks `stop` and then enters the kernel; a close()
// landing between the two would be missed by a single wake. Two layers make
// this correct:
//   1. close() repeats FUTEX_WAKE(word, INT_MAX) every millisecond while the
//      thread is in its futex phase, until the thread acknowledges by exiting.
//      The first wake almost always suffices; the loop closes the race.
//   2. The thread never sleeps in the kernel longer than kSlice (200 ms): it
//      waits in slices, re-checking `stop` between them, while keeping the
//      total timeout (deadline on CLOCK_MONOTONIC). This is a backstop: should
//      a wake ever fail to reach the thread (WakeIfMapped does not wake an
//      unmapped address, which the ownership rules below keep from happening
//      while a thread waits), close() and the destructor still join the
//      thread within one slice instead of hanging.
// Waking with INT_MAX wakes every waiter on that word, including waiters in
// other processes and other waiters of this process. That is harmless: a futex
// wake-up is only ever a hint, every waiter re-checks the word (Woken is
// documented as possibly spurious).
// A side effect of slicing: if the word changes and is woken exactly between
// two slices, the next slice sees a different value and reports NotEqual
// instead of Woken. Both mean "re-check"; a wake without a change of the word
// can be lost in that window, which a futex protocol must not rely on anyway
// (the same holds for a wake arriving before the first FUTEX_WAIT).
//
// close() while armed delivers WaitResult.Closed *synchronously*, from inside
// close(), after the thread has been joined and the TSFN released; results the
// thread had already queued are dropped. So no callback ever fires after
// close() returns. A waiter collected without close() stops and joins its
// thread in its destructor (it cannot be armed then, see above, except during
// environment teardown, where no callback is delivered). A waiter co-owns its
// Mapping (see segment.h), so its word stays mapped until its thread is gone,
// even when teardown releases the ArrayBuffer first.
//
// If FUTEX_WAIT fails with an unexpected error (EFAULT: the page is beyond the
// end of a file somebody truncated), the waiter delivers Closed and becomes
// unusable: later wait() calls throw that error.
//
// A callback that throws: from a delivered result, the exception goes to
// napi_fatal_exception ('uncaughtException', like any async callback); the
// waiter is disarmed and usable. From close(), close() rethrows it after the
// waiter is fully closed.

#include "wait.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>

#include "args.h"
#include "errors.h"
#include "segment.h"

namespace shmbus {

namespace {

using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC, like FUTEX_WAIT's relative timeout

constexpr std::chrono::milliseconds kSlice{200};
constexpr std::chrono::milliseconds kCloseWakeInterval{1};

enum WaitResult : int { kWoken = 0, kTimedOut = 1, kNotEqual = 2, kClosed = 3 };
// Internal outcomes of the thread's wait, never shown to JS.
constexpr int kStopped = -1;
constexpr int kFailed = -2;

long FutexWait(uint32_t* word, uint32_t expected, const struct timespec* timeout) {
  return syscall(SYS_futex, word, FUTEX_WAIT, expected, timeout, nullptr, 0);
}

long FutexWakeRaw(uint32_t* word, int count) { return syscall(SYS_futex, word, FUTEX_WAKE, count, nullptr, nullptr, 0); }

// Wakes `word` only while its mapping is still mapped (a wake on an unmapped
// address could hit whatever the kernel mapped there next).
void WakeIfMapped(const std::shared_ptr<Mapping>& mapping, uint32_t* word, int count) {
  std::lock_guard<std::mutex> lock(MappingMutex());
  if (!mapping->unmapped) FutexWakeRaw(word, count);
}

struct Payload {
  int result;
  int err;
};

class Waiter;

struct AddonData {
  Napi::FunctionReference waiterCtor;
};

// State shared by the JS object, its thread and its TSFN. Owned through
// std::shared_ptr by all three, so it outlives whichever goes last.
struct WaiterCore {
  uint32_t* word = nullptr;               // constant after construction
  napi_threadsafe_function tsfn = nullptr;  // constant after construction

  std::mutex mu;
  std::condition_variable cv;      // thread: wait for arm / stop
  std::condition_variable exitCv;  // close(): wait for the thread to exit
  std::atomic<bool> stop{false};   // written under mu; read without it between futex slices
  bool armRequest = false;
  bool inFutex = false;
  bool exited = false;
  bool tsfnAlive = true;  // false once the TSFN finalizer ran (never call it then)
  uint32_t expected = 0;
  bool infinite = true;
  Clock::time_point deadline{};

  // JS thread only: the live JS-side owner, null once closed or destroyed.
  Waiter* owner = nullptr;
};

// One armed wait, on the waiter thread. Returns a WaitResult, kStopped or
// kFailed (with *err set).
int WaitOnWord(WaiterCore& core, uint32_t expected, bool infinite, Clock::time_point deadline, int* err) {
  for (;;) {
    if (core.stop.load(std::memory_order_acquire)) return kStopped;
    auto slice = std::chrono::duration_cast<std::chrono::nanoseconds>(kSlice);
    if (!infinite) {
      auto now = Clock::now();
      if (now >= deadline) return kTimedOut;
      auto remaining = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
      if (remaining < slice) slice = remaining;
    }
    struct timespec ts;
    ts.tv_sec = static_cast<time_t>(slice.count() / 1000000000);
    ts.tv_nsec = static_cast<long>(slice.count() % 1000000000);
    if (FutexWait(core.word, expected, &ts) == 0)
      return core.stop.load(std::memory_order_acquire) ? kStopped : kWoken;
    int e = errno;
    switch (e) {
      case EAGAIN:
        return core.stop.load(std::memory_order_acquire) ? kStopped : kNotEqual;
      case ETIMEDOUT:  // end of a slice (or of the whole wait: checked at the top)
      case EINTR:      // signal: retry with the remaining time
        continue;
      default:
        *err = e;
        return kFailed;
    }
  }
}

void ThreadMain(std::shared_ptr<WaiterCore> core) {
  std::unique_lock<std::mutex> lock(core->mu);
  for (;;) {
    core->cv.wait(lock, [&] { return core->stop.load() || core->armRequest; });
    if (core->stop.load()) break;
    core->armRequest = false;
    core->inFutex = true;
    const uint32_t expected = core->expected;
    const bool infinite = core->infinite;
    const Clock::time_point deadline = core->deadline;
    lock.unlock();
    int err = 0;
    int result = WaitOnWord(*core, expected, infinite, deadline, &err);
    lock.lock();
    core->inFutex = false;
    // On stop, close() delivers Closed itself (or nothing, from a destructor).
    if (result == kStopped || core->stop.load()) break;
    if (core->tsfnAlive) {
      auto* payload = new Payload{result, err};
      if (napi_call_threadsafe_function(core->tsfn, payload, napi_tsfn_nonblocking) != napi_ok) delete payload;
    }
  }
  core->exited = true;
  core->exitCv.notify_all();
}

class Waiter : public Napi::ObjectWrap<Waiter> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeWaiter",
                       {
                           InstanceMethod<&Waiter::Wait>("wait"),
                           InstanceAccessor<&Waiter::GetArmed>("armed"),
                           InstanceMethod<&Waiter::Close>("close"),
                       });
  }

  // new NativeWaiter(buffer, byteOffset, callback)
  explicit Waiter(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Waiter>(info) {
    Napi::Env env = info.Env();
    Napi::ArrayBuffer buffer = RequireArrayBuffer(info, 0, "buffer");
    if (IsDetached(env, buffer)) ThrowTypeError(env, "shmbus: the buffer is detached (unmapped)");
    {
      std::lock_guard<std::mutex> lock(MappingMutex());
      mapping_ = FindMappingLocked(buffer.Data());
    }
    if (!mapping_ || mapping_->length != buffer.ByteLength())
      ThrowTypeError(env, "shmbus: createWaiter() expects an ArrayBuffer returned by create() or open()");
    size_t offset = RequireWordOffset(info, 1, buffer);
    Napi::Value callback = Arg(info, 2);
    if (!callback.IsFunction()) ThrowTypeError(env, "shmbus: callback must be a function");

    core_ = std::make_shared<WaiterCore>();
    core_->word = reinterpret_cast<uint32_t*>(static_cast<char*>(buffer.Data()) + offset);

    auto* finalizeData = new std::shared_ptr<WaiterCore>(core_);
    napi_status status = napi_create_threadsafe_function(
        env, nullptr, nullptr, Napi::String::New(env, "shmbus.NativeWaiter"), 0, 1, finalizeData, FinalizeTsfn,
        core_.get(), CallJs, &core_->tsfn);
    if (status != napi_ok) {
      delete finalizeData;
      core_->tsfnAlive = false;
      NAPI_THROW_IF_FAILED_VOID(env, status);
    }
    // Idle: do not keep the event loop alive.
    napi_unref_threadsafe_function(env, core_->tsfn);

    try {
      thread_ = std::thread(ThreadMain, core_);
    } catch (const std::system_error& e) {
      napi_release_threadsafe_function(core_->tsfn, napi_tsfn_release);
      ThrowSystemError(env, e.code().value(), "pthread_create");
    }

    core_->owner = this;
    buffer_ = Napi::Persistent(buffer);
    callback_ = Napi::Persistent(callback.As<Napi::Function>());
  }

  ~Waiter() override {
    // Collected without close(), or environment teardown. No JS may run here.
    if (closed_) return;
    closed_ = true;
    core_->owner = nullptr;
    StopThread();
    if (armed_) {
      // Only reachable during environment teardown (an armed waiter holds a
      // strong reference to itself, so it is never collected while armed).
      armed_ = false;
      std::lock_guard<std::mutex> lock(MappingMutex());
      if (mapping_->armedWaiters > 0) mapping_->armedWaiters--;
    }
    if (core_->tsfnAlive) napi_release_threadsafe_function(core_->tsfn, napi_tsfn_release);
  }

 private:
  // wait(expected, timeoutMs)
  Napi::Value Wait(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (failedErrno_ != 0) ThrowSystemError(env, failedErrno_, "futex", nullptr, "the waiter failed and is closed");
    if (closed_) ThrowSystemError(env, EBADF, "futex", nullptr, "the waiter is closed");
    if (armed_) ThrowSystemError(env, EBUSY, "futex", nullptr, "the waiter is already armed");
    Napi::Value expectedValue = Arg(info, 0);
    if (!expectedValue.IsNumber()) ThrowTypeError(env, "shmbus: expected must be a number");
    // ToInt32-style wrap-around: -1 and 0xffffffff name the same word value.
    const uint32_t expected = expectedValue.As<Napi::Number>().Uint32Value();
    const double timeoutMs = RequireNumber(info, 1, "timeoutMs");
    if (std::isnan(timeoutMs)) ThrowTypeError(env, "shmbus: timeoutMs must not be NaN");

    bool infinite = timeoutMs < 0 || timeoutMs > 1e12;  // > ~31 years: treat as no limit
    Clock::time_point deadline{};
    if (!infinite) {
      deadline = Clock::now() + std::chrono::nanoseconds(static_cast<long long>(std::llround(timeoutMs * 1e6)));
    }

    {
      std::lock_guard<std::mutex> lock(MappingMutex());
      if (mapping_->unmapped) ThrowSystemError(env, EBADF, "futex", nullptr, "the mapping was unmapped");
      mapping_->armedWaiters++;
    }
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      core_->expected = expected;
      core_->infinite = infinite;
      core_->deadline = deadline;
      core_->armRequest = true;
    }
    core_->cv.notify_all();
    armed_ = true;
    if (core_->tsfnAlive) napi_ref_threadsafe_function(env, core_->tsfn);
    Ref();
    return env.Undefined();
  }

  Napi::Value GetArmed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), armed_); }

  // close(): idempotent. Delivers Closed synchronously if armed.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (closed_) return env.Undefined();
    closed_ = true;
    core_->owner = nullptr;  // anything the thread already queued is dropped
    const bool wasArmed = armed_;
    armed_ = false;
    StopThread();
    if (wasArmed) {
      std::lock_guard<std::mutex> lock(MappingMutex());
      if (mapping_->armedWaiters > 0) mapping_->armedWaiters--;
    }
    if (core_->tsfnAlive) {
      napi_unref_threadsafe_function(env, core_->tsfn);
      napi_release_threadsafe_function(core_->tsfn, napi_tsfn_release);
    }
    Napi::FunctionReference callback = std::move(callback_);
    buffer_.Reset();
    if (wasArmed) {
      // Drop the self-reference only after the callback ran: `this` stays
      // alive through it. If the callback throws, close() rethrows, but the
      // waiter is fully closed by then.
      struct UnrefOnExit {
        Waiter* self;
        ~UnrefOnExit() { self->Unref(); }
      } unrefOnExit{this};
      callback.Call({Napi::Number::New(env, kClosed)});
    }
    return env.Undefined();
  }

  // Sets `stop` and joins the thread (see the header comment).
  void StopThread() {
    {
      std::unique_lock<std::mutex> lock(core_->mu);
      core_->stop.store(true, std::memory_order_release);
      core_->cv.notify_all();
      while (!core_->exited) {
        if (core_->inFutex) WakeIfMapped(mapping_, core_->word, INT_MAX);
        core_->exitCv.wait_for(lock, kCloseWakeInterval);
      }
    }
    if (thread_.joinable()) thread_.join();
  }

  // A result from the thread, on the JS thread.
  void Deliver(const Payload& payload) {
    if (closed_ || !armed_) return;
    Napi::Env env = Env();
    armed_ = false;
    {
      std::lock_guard<std::mutex> lock(MappingMutex());
      if (mapping_->armedWaiters > 0) mapping_->armedWaiters--;
    }
    int result = payload.result;
    if (result == kFailed) {
      // The word cannot be waited on (EFAULT...): report Closed, stay closed.
      failedErrno_ = payload.err != 0 ? payload.err : EIO;
      result = kClosed;
    }
    Napi::Error pending;
    bool threw = false;
    try {
      callback_.Call({Napi::Number::New(env, result)});
    } catch (const Napi::Error& e) {
      pending = e;
      threw = true;
    }
    // The callback may have re-armed (keep the loop referenced) or closed.
    if (!armed_ && !closed_ && core_->tsfnAlive) napi_unref_threadsafe_function(env, core_->tsfn);
    if (failedErrno_ != 0 && !closed_) {
      // Stop the thread for good; the callback could not re-arm (wait()
      // throws once failedErrno_ is set).
      closed_ = true;
      core_->owner = nullptr;
      StopThread();
      if (core_->tsfnAlive) napi_release_threadsafe_function(core_->tsfn, napi_tsfn_release);
      buffer_.Reset();
    }
    Unref();  // the self-reference taken by wait(); `this` may be collected after this
    if (threw) throw pending;
  }

  static void CallJs(napi_env env, napi_value /*jsCallback*/, void* context, void* data) {
    std::unique_ptr<Payload> payload(static_cast<Payload*>(data));
    // env == null: the TSFN is being torn down; `context` may be gone already.
    if (env == nullptr || context == nullptr) return;
    Waiter* waiter = static_cast<WaiterCore*>(context)->owner;
    if (waiter == nullptr) return;
    try {
      waiter->Deliver(*payload);
    } catch (const Napi::Error& e) {
      // The callback threw. Report it like any async callback's exception
      // ('uncaughtException'); merely leaving it pending would make Node 20
      // swallow it with a DEP0168 warning (legacy Node-API policy).
      napi_fatal_exception(env, e.Value());
    } catch (...) {
      // Nothing else is thrown here; never let anything unwind into Node.
    }
  }

  static void FinalizeTsfn(napi_env /*env*/, void* data, void* /*hint*/) {
    auto* holder = static_cast<std::shared_ptr<WaiterCore>*>(data);
    {
      std::lock_guard<std::mutex> lock((*holder)->mu);
      (*holder)->tsfnAlive = false;
    }
    delete holder;
  }

  std::shared_ptr<WaiterCore> core_;
  // Keeps the pages mapped while this waiter lives, even if the ArrayBuffer is
  // finalized first (environment teardown releases buffers before wrapped
  // objects): the thread's word stays valid and close-time wakes reach it.
  std::shared_ptr<Mapping> mapping_;
  std::thread thread_;
  Napi::Reference<Napi::ArrayBuffer> buffer_;
  Napi::FunctionReference callback_;
  bool armed_ = false;
  bool closed_ = false;
  int failedErrno_ = 0;
};

}  // namespace

void InitWaiters(Napi::Env env) {
  auto* data = new AddonData();
  data->waiterCtor = Napi::Persistent(Waiter::Init(env));
  env.SetInstanceData<AddonData>(data);
}

// futexWake(buffer, byteOffset, count): number woken
Napi::Value FutexWake(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::ArrayBuffer buffer = RequireArrayBuffer(info, 0, "buffer");
  // A detached buffer has byteLength 0, so the offset check rejects it.
  size_t offset = RequireWordOffset(info, 1, buffer);
  double count = RequireNumber(info, 2, "count");
  if (std::isnan(count)) ThrowTypeError(env, "shmbus: count must not be NaN");
  int n = count >= static_cast<double>(INT_MAX) ? INT_MAX : count <= 0 ? 0 : static_cast<int>(count);
  auto* word = reinterpret_cast<uint32_t*>(static_cast<char*>(buffer.Data()) + offset);
  long woken = FutexWakeRaw(word, n);
  if (woken < 0) ThrowSystemError(env, errno, "futex");
  return Napi::Number::New(env, static_cast<double>(woken));
}

// createWaiter(buffer, byteOffset, callback): NativeWaiter
Napi::Value CreateWaiter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return env.GetInstanceData<AddonData>()->waiterCtor.New({Arg(info, 0), Arg(info, 1), Arg(info, 2)});
}

// processStartTime(pid): clock ticks since boot, or -1 if there is no such process (or it has
// exited and waits to be reaped: a zombie)
Napi::Value ProcessStartTime(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value pidValue = Arg(info, 0);
  if (!pidValue.IsNumber()) ThrowTypeError(env, "shmbus: pid must be a positive integer");
  double pidNumber = pidValue.As<Napi::Number>().DoubleValue();
  if (!IsSafeInteger(pidNumber) || pidNumber < 1 || pidNumber > INT_MAX)
    ThrowTypeError(env, "shmbus: pid must be a positive integer");

  const std::string path = "/proc/" + std::to_string(static_cast<long>(pidNumber)) + "/stat";
  int fd;
  do {
    fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == ENOENT || errno == ESRCH) return Napi::Number::New(env, -1);
    ThrowSystemError(env, errno, "open", path.c_str());
  }
  std::string text;
  char chunk[1024];
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n > 0) {
      text.append(chunk, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) break;
    if (errno == EINTR) continue;
    int err = errno;
    close(fd);
    if (err == ESRCH) return Napi::Number::New(env, -1);  // exited and reaped between open and read
    ThrowSystemError(env, err, "read", path.c_str());
  }
  close(fd);

  // "pid (comm) state ppid ... starttime ...": comm may contain spaces and ')',
  // so fields are counted from the LAST ')'. The token after it is field 3
  // (state); starttime is field 22.
  size_t close = text.rfind(')');
  if (close == std::string::npos) ThrowSystemError(env, EINVAL, "read", path.c_str(), "unexpected format");
  const char* p = text.c_str() + close + 1;
  while (*p == ' ') p++;
  // A zombie (Z) or dying (X) process has exited: it runs no code and writes no memory any
  // more, only its parent has not reaped it yet. For shmbus it is gone.
  if (*p == 'Z' || *p == 'X') return Napi::Number::New(env, -1);
  for (int field = 3; field < 22; field++) {
    while (*p == ' ') p++;
    while (*p != ' ' && *p != '\0') p++;
  }
  while (*p == ' ') p++;
  if (*p < '0' || *p > '9') ThrowSystemError(env, EINVAL, "read", path.c_str(), "unexpected format");
  char* end = nullptr;
  errno = 0;
  unsigned long long start = std::strtoull(p, &end, 10);
  if (errno != 0 || end == p) ThrowSystemError(env, EINVAL, "read", path.c_str(), "unexpected format");
  return Napi::Number::New(env, static_cast<double>(start));
}

}  // namespace shmbus

/* conc.hpp: the C++17 layer over conc.h. Header-only; needs nothing but
 * conc.h, the C++ standard library, and libconc at link time.
 *
 *   conc::thread t([&] { return work(); });     // any callable, its result
 *   auto value = t.join();                      // rethrows what it threw
 *
 *   auto map = conc::mmap::open("data.txt");
 *   for (std::string_view line : map.lines()) { ... }   // lines keep their '\n'
 *
 *   auto shm = conc::shm::create(100);          // a fresh name: shm.name()
 *   auto list = conc::list<std::int64_t>::create(100);
 *   conc::process p([&] { list[0] = 1; return 0; });   // a forked child
 *   int code = p.join();
 *
 * Conventions:
 * - Every failure throws conc::error, which carries the conc_status and the
 *   message of conc_last_error_message() (operation, argument, OS reason).
 * - Handles (thread, process, mmap, shm, list) are move-only. A moved-from
 *   or default-constructed handle is inert: accessors return empty values,
 *   operations throw conc::error with CONC_ERR_INVALID_STATE.
 * - Destructors never throw: mmap, shm and list close; a joinable thread
 *   is joined (like std::jthread) and a joinable process is killed
 *   (SIGKILL) and reaped, discarding the result.
 * - A shm or list made by create removes its name when destroyed unless
 *   keep() was called; one made by open never does.
 */

#ifndef CONC_HPP
#define CONC_HPP

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "conc.hpp needs C++17 or later; conc.h alone works from C99 and C++11"
#endif

#include "conc.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <iostream>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

namespace conc {

// ---------------------------------------------------------------------------
// Errors

/// What every failing conc call throws: the conc_status and the message
/// conc_last_error_message() gave (what()), plus the errno behind it.
class error : public std::runtime_error {
public:
    /// An error with `status`; an empty message is replaced by the status's
    /// description (conc_status_str).
    error(conc_status status, const std::string& message, int os_error = 0)
        : std::runtime_error(message.empty() ? std::string(conc_status_str(status)) : message),
          status_(status),
          os_error_(os_error) {}

    /// The status of the failed call, e.g. CONC_ERR_NOT_FOUND.
    conc_status status() const noexcept { return status_; }
    /// The errno behind the failure, or 0 when it had no OS cause.
    int os_error() const noexcept { return os_error_; }
    /// A static description of status(), e.g. "not found".
    const char* status_str() const noexcept { return conc_status_str(status_); }

private:
    conc_status status_;
    int os_error_;
};

namespace detail {

/// The error of the conc call that just returned `status` on this thread.
inline error last_error(conc_status status) {
    return error(status, conc_last_error_message(), conc_last_os_error());
}

[[noreturn]] inline void throw_last_error(conc_status status) {
    throw last_error(status);
}

inline void check(conc_status status) {
    if (status != CONC_OK) {
        throw_last_error(status);
    }
}

[[noreturn]] inline void throw_closed(const char* op, const char* what) {
    throw error(CONC_ERR_INVALID_STATE,
                std::string(op) + ": the " + what + " is closed or moved from");
}

/// A NUL-terminated copy of a path or name for the C API. An embedded NUL
/// would silently shorten it, so it is refused.
inline std::string c_string(std::string_view text, const char* op, const char* arg) {
    if (text.find('\0') != std::string_view::npos) {
        throw error(CONC_ERR_INVALID_ARGUMENT,
                    std::string(op) + ": " + arg + " contains a NUL byte");
    }
    return std::string(text);
}

template <class T>
using remove_cvref_t = std::remove_cv_t<std::remove_reference_t<T>>;

}  // namespace detail

// ---------------------------------------------------------------------------
// Library-wide functions

/// The library's version, "MAJOR.MINOR.PATCH".
inline const char* version() noexcept { return conc_version(); }

/// The number of CPUs this process may run on (at least 1).
inline std::size_t cpu_count() noexcept { return conc_cpu_count(); }

/// Lets another thread run.
inline void yield() noexcept { conc_thread_yield(); }

/// Sleeps for `milliseconds`.
inline void sleep_ms(std::uint64_t milliseconds) noexcept { conc_sleep_ms(milliseconds); }

/// Sleeps for `duration`, rounded up to whole milliseconds (negative: not at all).
template <class Rep, class Period>
void sleep_for(const std::chrono::duration<Rep, Period>& duration) {
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(duration).count();
    if (ms > 0) {
        conc_sleep_ms(static_cast<std::uint64_t>(ms));
    }
}

// ---------------------------------------------------------------------------
// Threads

/// Options for a new thread.
struct thread_options {
    /// Visible to debuggers; empty: none. Longer than the OS allows: truncated.
    std::string name;
    /// 0: the platform default; below the minimum: raised to it.
    std::size_t stack_size = 0;
};

namespace detail {

// Where a thread's result waits for join(): a value, a reference, or nothing.
template <class R>
struct result_slot {
    std::optional<R> value;
    template <class T>
    void put(T&& v) { value.emplace(std::forward<T>(v)); }
    R take() { return std::move(*value); }
};

template <class R>
struct result_slot<R&> {
    R* pointer = nullptr;
    void put(R& v) noexcept { pointer = std::addressof(v); }
    R& take() const noexcept { return *pointer; }
};

template <>
struct result_slot<void> {
    void take() const noexcept {}
};

// What a thread shares with its conc::thread: the result, or the exception
// that escaped the callable. Owned jointly (shared_ptr) by the handle and
// the running thread, so that a detached thread or a moved handle is safe.
template <class R>
struct thread_state_base {
    virtual ~thread_state_base() = default;
    std::exception_ptr exception;
    result_slot<R> result;
};

template <class R, class F, class... Args>
struct thread_state final : thread_state_base<R> {
    using ticket = std::shared_ptr<thread_state_base<R>>;

    template <class G, class... A>
    explicit thread_state(G&& g, A&&... a) : call(std::in_place, std::forward<G>(g), std::forward<A>(a)...) {}

    // The callable and its arguments; destroyed on the thread once it returns.
    std::optional<std::tuple<F, Args...>> call;

    void run() {
        auto invoke = [](auto&&... xs) -> decltype(auto) {
            return std::invoke(std::forward<decltype(xs)>(xs)...);
        };
        if constexpr (std::is_void_v<R>) {
            std::apply(invoke, std::move(*call));
        } else if constexpr (std::is_reference_v<R>) {
            this->result.put(std::apply(invoke, std::move(*call)));
        } else {
            this->result.put(R(std::apply(invoke, std::move(*call))));
        }
    }

    // The conc_thread_fn: no exception may cross into C.
    static void* entry(void* arg) noexcept {
        std::unique_ptr<ticket> owner(static_cast<ticket*>(arg));
        auto& self = static_cast<thread_state&>(**owner);
        try {
            self.run();
            self.call.reset();
        } catch (...) {
            self.exception = std::current_exception();
            self.call.reset();
        }
        return nullptr;
    }
};

template <class F, class... Args>
using invoke_result_t = std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>;

}  // namespace detail

/// A thread running any callable (lambdas with captures, move-only
/// callables, functions with arguments). R is what the callable returns;
/// class template argument deduction finds it: `conc::thread t(f, args...)`.
///
/// Like std::jthread, a thread still joinable when destroyed (or assigned
/// over) is joined first; its result and exception are then discarded.
/// An exception escaping the callable never reaches C: join() rethrows it.
/// The callable must return normally or throw: ending the thread with
/// pthread_exit from inside it terminates the program.
template <class R>
class thread {
public:
    using result_type = R;

    /// Not a thread: joinable() is false.
    thread() noexcept = default;

    /// Starts a thread running `f(args...)` on decayed copies (moves) of
    /// `f` and `args`, like std::thread. Throws conc::error.
    template <class F, class... Args,
              class = std::enable_if_t<!std::is_same_v<detail::remove_cvref_t<F>, thread> &&
                                       !std::is_same_v<detail::remove_cvref_t<F>, thread_options>>>
    explicit thread(F&& f, Args&&... args) {
        start(nullptr, std::forward<F>(f), std::forward<Args>(args)...);
    }

    /// Starts a thread with a name and stack size. Throws conc::error.
    template <class F, class... Args>
    thread(const thread_options& options, F&& f, Args&&... args) {
        start(&options, std::forward<F>(f), std::forward<Args>(args)...);
    }

    thread(thread&& other) noexcept
        : handle_(std::exchange(other.handle_, conc_thread{0})), state_(std::move(other.state_)) {}

    /// Joins this thread first if it is joinable, then takes `other`'s.
    thread& operator=(thread&& other) noexcept {
        if (this != &other) {
            join_quietly();
            handle_ = std::exchange(other.handle_, conc_thread{0});
            state_ = std::move(other.state_);
        }
        return *this;
    }

    thread(const thread&) = delete;
    thread& operator=(const thread&) = delete;

    ~thread() { join_quietly(); }

    /// True until join() or detach() succeeds, or the handle is moved from.
    bool joinable() const noexcept { return handle_.id != 0; }

    /// The C handle (id 0 when not joinable).
    conc_thread native_handle() const noexcept { return handle_; }

    /// Waits for the thread and returns what the callable returned, or
    /// rethrows the exception that escaped it. Throws conc::error with
    /// CONC_ERR_INVALID_STATE when not joinable, CONC_ERR_DEADLOCK when
    /// called from the thread itself (which then stays joinable).
    R join() {
        if (!joinable()) {
            throw error(CONC_ERR_INVALID_STATE,
                        "conc::thread::join: the thread is not joinable "
                        "(default-constructed, moved from, joined or detached)");
        }
        detail::check(conc_thread_join(handle_, nullptr));
        handle_ = conc_thread{0};
        auto state = std::move(state_);
        if (state->exception) {
            std::rethrow_exception(state->exception);
        }
        return state->result.take();
    }

    /// Lets the thread run on its own; its result and any exception that
    /// escapes the callable are discarded. Throws conc::error with
    /// CONC_ERR_INVALID_STATE when not joinable.
    void detach() {
        if (!joinable()) {
            throw error(CONC_ERR_INVALID_STATE,
                        "conc::thread::detach: the thread is not joinable "
                        "(default-constructed, moved from, joined or detached)");
        }
        detail::check(conc_thread_detach(handle_));
        handle_ = conc_thread{0};
        state_.reset();
    }

private:
    template <class F, class... Args>
    void start(const thread_options* options, F&& f, Args&&... args) {
        using result = detail::invoke_result_t<F, Args...>;
        static_assert(std::is_void_v<R> || std::is_convertible_v<result, R>,
                      "conc::thread<R>: the callable's result does not convert to R");
        using state_type = detail::thread_state<R, std::decay_t<F>, std::decay_t<Args>...>;
        using ticket = typename state_type::ticket;

        std::string name;
        if (options != nullptr) {
            name = detail::c_string(options->name, "conc::thread", "the thread name");
        }
        auto state = std::make_shared<state_type>(std::forward<F>(f), std::forward<Args>(args)...);
        // The running thread's share of the state, released when it ends.
        auto* thread_share = new ticket(state);
        conc_thread handle{0};
        conc_status status;
        if (options != nullptr) {
            const conc_thread_options c_options{name.empty() ? nullptr : name.c_str(),
                                                options->stack_size};
            status = conc_thread_spawn_with(&handle, &c_options, &state_type::entry, thread_share);
        } else {
            status = conc_thread_spawn(&handle, &state_type::entry, thread_share);
        }
        if (status != CONC_OK) {
            error failure = detail::last_error(status);  // before any destructor runs
            delete thread_share;
            throw failure;
        }
        handle_ = handle;
        state_ = std::move(state);
    }

    void join_quietly() noexcept {
        if (joinable()) {
            // A failure (this is the thread itself) leaves the thread to end
            // on its own; it owns its share of the state.
            (void)conc_thread_join(handle_, nullptr);
        }
        handle_ = conc_thread{0};
        state_.reset();
    }

    conc_thread handle_{0};
    std::shared_ptr<detail::thread_state_base<R>> state_;
};

template <class F, class... Args>
thread(F&&, Args&&...) -> thread<detail::invoke_result_t<F, Args...>>;

template <class F, class... Args>
thread(const thread_options&, F&&, Args&&...) -> thread<detail::invoke_result_t<F, Args...>>;

// ---------------------------------------------------------------------------
// Memory-mapped files

/// How a file is mapped (conc_access).
enum class access {
    read = CONC_ACCESS_READ,    ///< read only
    write = CONC_ACCESS_WRITE,  ///< shared: writes reach the file
    copy = CONC_ACCESS_COPY,    ///< private copy-on-write: the file never changes
};

/// Where seek() counts from (conc_whence).
enum class whence {
    set = CONC_SEEK_SET,  ///< from the start
    cur = CONC_SEEK_CUR,  ///< from the cursor
    end = CONC_SEEK_END,  ///< from the end
};

/// What mmap::advise() tells the OS about a range (conc_advice).
enum class advice {
    normal = CONC_ADVICE_NORMAL,          ///< no special treatment
    random = CONC_ADVICE_RANDOM,          ///< random order: read ahead less
    sequential = CONC_ADVICE_SEQUENTIAL,  ///< in order: read ahead more
    willneed = CONC_ADVICE_WILLNEED,      ///< needed soon: read it in now
    dontneed = CONC_ADVICE_DONTNEED,      ///< not needed: free the pages (a copy map loses its changes there)
};

/// The lines of a byte range, each with its '\n' (the last one without,
/// when the range does not end with one): what a readline() loop returns.
class line_iterator {
public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = std::string_view;
    using difference_type = std::ptrdiff_t;
    using pointer = const std::string_view*;
    using reference = const std::string_view&;

    /// The end.
    line_iterator() noexcept = default;
    /// The first line of `bytes`.
    explicit line_iterator(std::string_view bytes) noexcept : rest_(bytes) { advance(); }

    reference operator*() const noexcept { return line_; }
    pointer operator->() const noexcept { return &line_; }

    line_iterator& operator++() noexcept {
        advance();
        return *this;
    }
    line_iterator operator++(int) noexcept {
        line_iterator before = *this;
        advance();
        return before;
    }

    friend bool operator==(const line_iterator& a, const line_iterator& b) noexcept {
        return a.line_.data() == b.line_.data() && a.line_.size() == b.line_.size();
    }
    friend bool operator!=(const line_iterator& a, const line_iterator& b) noexcept {
        return !(a == b);
    }

private:
    void advance() noexcept {
        if (rest_.empty()) {
            line_ = std::string_view();  // the end: no line is empty
            return;
        }
        const std::size_t newline = rest_.find('\n');
        const std::size_t n = newline == std::string_view::npos ? rest_.size() : newline + 1;
        line_ = rest_.substr(0, n);
        rest_.remove_prefix(n);
    }

    std::string_view rest_;
    std::string_view line_;
};

/// A range of lines for range-for: `for (std::string_view line : map.lines())`.
class line_range {
public:
    explicit line_range(std::string_view bytes) noexcept : bytes_(bytes) {}
    line_iterator begin() const noexcept { return line_iterator(bytes_); }
    line_iterator end() const noexcept { return line_iterator(); }

private:
    std::string_view bytes_;
};

/// A memory-mapped file or anonymous memory (conc_mmap). Move-only; the
/// destructor unmaps. Touching pages of a file another process truncated
/// raises SIGBUS, as with any mmap.
class mmap {
public:
    /// Not a map: size() 0, view() empty.
    mmap() noexcept = default;

    /// Takes ownership of a map made by conc_mmap_open & co.
    explicit mmap(conc_mmap* adopted) noexcept : map_(adopted) {}

    /// Maps the whole file `path`. Throws conc::error: CONC_ERR_NOT_FOUND
    /// when it does not exist, CONC_ERR_INVALID_ARGUMENT for a directory...
    static mmap open(std::string_view path, access mode = access::read) {
        const std::string c_path = detail::c_string(path, "conc::mmap::open", "the path");
        conc_mmap* map = nullptr;
        detail::check(conc_mmap_open(&map, c_path.c_str(), static_cast<conc_access>(mode)));
        return mmap(map);
    }

    /// Maps `length` bytes of `path` from `offset` (any offset; length 0: to
    /// the end). Throws conc::error (CONC_ERR_OUT_OF_RANGE past the end).
    static mmap open_range(std::string_view path, access mode, std::uint64_t offset,
                           std::size_t length = 0) {
        const std::string c_path = detail::c_string(path, "conc::mmap::open_range", "the path");
        conc_mmap* map = nullptr;
        detail::check(conc_mmap_open_range(&map, c_path.c_str(), static_cast<conc_access>(mode),
                                           offset, length));
        return mmap(map);
    }

    /// `length` zero-filled writable bytes, shared with forked children.
    static mmap anonymous(std::size_t length) {
        conc_mmap* map = nullptr;
        detail::check(conc_mmap_anonymous(&map, length));
        return mmap(map);
    }

    mmap(mmap&& other) noexcept : map_(std::exchange(other.map_, nullptr)) {}
    mmap& operator=(mmap&& other) noexcept {
        if (this != &other) {
            (void)conc_mmap_close(map_);
            map_ = std::exchange(other.map_, nullptr);
        }
        return *this;
    }
    mmap(const mmap&) = delete;
    mmap& operator=(const mmap&) = delete;
    ~mmap() { (void)conc_mmap_close(map_); }

    bool is_open() const noexcept { return map_ != nullptr; }
    explicit operator bool() const noexcept { return is_open(); }

    /// The mapped bytes.
    std::string_view view() const noexcept {
        const std::uint8_t* bytes = data();
        return bytes == nullptr ? std::string_view()
                                : std::string_view(reinterpret_cast<const char*>(bytes), size());
    }
    const std::uint8_t* data() const noexcept { return conc_mmap_data(map_); }
    /// Writable bytes; nullptr for a read-only map.
    std::uint8_t* data_mut() noexcept { return conc_mmap_data_mut(map_); }
    std::size_t size() const noexcept { return conc_mmap_len(map_); }
    bool empty() const noexcept { return size() == 0; }

    /// The byte at `index`, unchecked.
    std::uint8_t operator[](std::size_t index) const noexcept { return data()[index]; }
    /// The byte at `index`; CONC_ERR_OUT_OF_RANGE past the end.
    std::uint8_t at(std::size_t index) const {
        if (index >= size()) {
            throw error(CONC_ERR_OUT_OF_RANGE, "conc::mmap::at(" + std::to_string(index) +
                                                   "): past the end (" + std::to_string(size()) +
                                                   " bytes)");
        }
        return data()[index];
    }

    /// The lines, each with its '\n', independent of the cursor. Not on a
    /// temporary map, which would be gone before the loop body runs.
    line_range lines() const& noexcept { return line_range(view()); }
    line_range lines() const&& = delete;

    /// The byte at the cursor, advancing it; nullopt at the end.
    std::optional<std::uint8_t> read_byte() {
        require_open("conc::mmap::read_byte");
        std::uint8_t byte = 0;
        const conc_status status = conc_mmap_read_byte(map_, &byte);
        if (status == CONC_ERR_OUT_OF_RANGE) {
            return std::nullopt;
        }
        detail::check(status);
        return byte;
    }

    /// The bytes from the cursor through the next '\n' (included), moving
    /// the cursor past them; empty at the end.
    std::string_view readline() {
        require_open("conc::mmap::readline");
        const std::uint8_t* line = nullptr;
        std::size_t len = 0;
        detail::check(conc_mmap_readline(map_, &line, &len));
        return len == 0 ? std::string_view()
                        : std::string_view(reinterpret_cast<const char*>(line), len);
    }

    /// Moves the cursor; CONC_ERR_OUT_OF_RANGE outside 0..=size().
    void seek(std::int64_t offset, whence from = whence::set) {
        require_open("conc::mmap::seek");
        detail::check(conc_mmap_seek(map_, offset, static_cast<conc_whence>(from)));
    }
    std::uint64_t tell() const noexcept { return conc_mmap_tell(map_); }

    /// The first occurrence of `needle` at or after `start`.
    std::optional<std::size_t> find(std::string_view needle, std::uint64_t start = 0) const {
        require_open("conc::mmap::find");
        std::int64_t position = -1;
        detail::check(conc_mmap_find(map_, needle.data(), needle.size(), start, &position));
        return position < 0 ? std::nullopt : std::optional<std::size_t>(static_cast<std::size_t>(position));
    }

    /// The last occurrence of `needle` at or after `start`.
    std::optional<std::size_t> rfind(std::string_view needle, std::uint64_t start = 0) const {
        require_open("conc::mmap::rfind");
        std::int64_t position = -1;
        detail::check(conc_mmap_rfind(map_, needle.data(), needle.size(), start, &position));
        return position < 0 ? std::nullopt : std::optional<std::size_t>(static_cast<std::size_t>(position));
    }

    /// What a readline() loop would count, on every core.
    std::uint64_t count_lines() const {
        require_open("conc::mmap::count_lines");
        std::uint64_t lines = 0;
        detail::check(conc_mmap_count_lines(map_, &lines));
        return lines;
    }

    // --- 0.2: creating, reading and writing at the cursor, resizing -----

    /// Creates the file `path` (it must not exist: CONC_ERR_ALREADY_EXISTS)
    /// of `size` zero bytes, its space reserved, mapped access::write.
    /// Nothing is left behind when it throws.
    static mmap create(std::string_view path, std::size_t size) {
        const std::string c_path = detail::c_string(path, "conc::mmap::create", "the path");
        conc_mmap* map = nullptr;
        detail::check(conc_mmap_create(&map, c_path.c_str(), size));
        return mmap(map);
    }

    /// Copies up to `count` bytes from the cursor into `buf`, advancing the
    /// cursor; returns how many (0 at the end).
    std::size_t read(void* buf, std::size_t count) {
        require_open("conc::mmap::read");
        std::size_t got = 0;
        detail::check(conc_mmap_read(map_, buf, count, &got));
        return got;
    }

    /// Up to `count` bytes from the cursor (all the rest by default), as
    /// Python's read(n); advances the cursor. Empty at the end.
    std::string read(std::size_t count = static_cast<std::size_t>(-1)) {
        require_open("conc::mmap::read");
        const std::size_t rest = size() - static_cast<std::size_t>(tell());
        std::string out(count < rest ? count : rest, '\0');
        out.resize(read(out.data(), out.size()));
        return out;
    }

    /// Writes `bytes` at the cursor and advances it. Throws
    /// CONC_ERR_OUT_OF_RANGE (nothing written) past the end,
    /// CONC_ERR_PERMISSION_DENIED on an access::read map.
    void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
    void write(const void* data, std::size_t count) {
        require_open("conc::mmap::write");
        detail::check(conc_mmap_write(map_, data, count));
    }
    void write_byte(std::uint8_t byte) {
        require_open("conc::mmap::write_byte");
        detail::check(conc_mmap_write_byte(map_, byte));
    }

    /// memmove within the map; the cursor stays.
    void move(std::uint64_t dest, std::uint64_t src, std::size_t count) {
        require_open("conc::mmap::move");
        detail::check(conc_mmap_move(map_, dest, src, count));
    }

    /// Changes the length: a whole-file access::write map changes its file,
    /// an anonymous map keeps its contents; other maps throw
    /// CONC_ERR_INVALID_STATE. data() and view() may move.
    void resize(std::size_t new_size) {
        require_open("conc::mmap::resize");
        detail::check(conc_mmap_resize(map_, new_size));
    }

    /// madvise for `length` bytes from `offset` (0: to the end).
    void advise(conc::advice hint, std::uint64_t offset = 0, std::size_t length = 0) {
        require_open("conc::mmap::advise");
        detail::check(conc_mmap_advise(map_, static_cast<conc_advice>(hint), offset, length));
    }

    /// Forces writes of an access::write map to the file.
    void flush() {
        require_open("conc::mmap::flush");
        detail::check(conc_mmap_flush(map_));
    }

    /// Unmaps now, reporting a failure; nothing when not open.
    void close() {
        detail::check(conc_mmap_close(std::exchange(map_, nullptr)));
    }

    conc_mmap* native_handle() const noexcept { return map_; }
    /// Gives up ownership: the caller closes the returned map.
    conc_mmap* release() noexcept { return std::exchange(map_, nullptr); }

private:
    void require_open(const char* op) const {
        if (map_ == nullptr) {
            detail::throw_closed(op, "map");
        }
    }

    conc_mmap* map_ = nullptr;
};

namespace detail {

/// What conc::shm, conc::list and conc::queue share: one handle of a named
/// object and, for one made by create, its name. `Kind` gives the handle
/// type, its unlink and close calls, and what the messages call it.
///
/// The destructor (and a move-assignment over it) removes the name when
/// this object owns it, then closes: never a throw. An explicit unlink()
/// gives the name up, so the name is never removed twice: a second removal
/// could take a new object another process made under the same name.
template <typename Kind>
class named_handle {
public:
    using handle = typename Kind::handle;

    named_handle() noexcept = default;
    named_handle(handle* h, bool owns_name) noexcept : h_(h), owns_name_(owns_name) {}
    named_handle(named_handle&& other) noexcept
        : h_(std::exchange(other.h_, nullptr)), owns_name_(other.give_up_name()) {}
    named_handle& operator=(named_handle&& other) noexcept {
        if (this != &other) {
            destroy();
            h_ = std::exchange(other.h_, nullptr);
            owns_name_.store(other.give_up_name(), std::memory_order_relaxed);
        }
        return *this;
    }
    named_handle(const named_handle&) = delete;
    named_handle& operator=(const named_handle&) = delete;
    ~named_handle() { destroy(); }

    handle* get() const noexcept { return h_; }
    void keep() noexcept { (void)give_up_name(); }
    bool owns_name() const noexcept {
        return h_ != nullptr && owns_name_.load(std::memory_order_relaxed);
    }

    void require_open(const char* op) const {
        if (h_ == nullptr) {
            throw_closed(op, Kind::what);
        }
    }

    /// Removes the name now (a second time: CONC_ERR_NOT_FOUND); this
    /// object no longer owns it. Const, as 0.1's unlink() was: the name is
    /// the system's, and who owns it is bookkeeping (a mutable atomic, so
    /// that const calls on other threads, owns_name(), never race with it).
    void unlink(const char* op) const {
        require_open(op);
        (void)give_up_name();
        check(Kind::unlink(h_));
    }

    /// The destructor's work, reporting a failure: removes the name if
    /// owned (one already removed is not an error), then closes. Nothing
    /// when not open; closed either way.
    void close() {
        handle* h = std::exchange(h_, nullptr);
        const bool owned = give_up_name();
        std::optional<error> failure;
        if (h != nullptr && owned) {
            const conc_status st = Kind::unlink(h);
            if (st != CONC_OK && st != CONC_ERR_NOT_FOUND) {
                failure = last_error(st);
            }
        }
        const conc_status closed = Kind::close(h);
        if (failure) {
            throw *failure;
        }
        check(closed);
    }

    /// Gives up the handle and the name: the caller closes the handle.
    handle* release() noexcept {
        (void)give_up_name();
        return std::exchange(h_, nullptr);
    }

private:
    /// Whether this object owned the name; it no longer does.
    bool give_up_name() const noexcept {
        return owns_name_.exchange(false, std::memory_order_relaxed);
    }

    void destroy() noexcept {
        if (give_up_name() && h_ != nullptr) {
            (void)Kind::unlink(h_);
        }
        (void)Kind::close(std::exchange(h_, nullptr));
    }

    handle* h_ = nullptr;
    mutable std::atomic<bool> owns_name_{false};
};

struct shm_kind {
    using handle = conc_shm;
    static constexpr const char* what = "segment";
    static conc_status unlink(const conc_shm* h) noexcept { return conc_shm_unlink(h); }
    static conc_status close(conc_shm* h) noexcept { return conc_shm_close(h); }
};

struct list_kind {
    using handle = conc_list;
    static constexpr const char* what = "list";
    static conc_status unlink(const conc_list* h) noexcept { return conc_list_unlink(h); }
    static conc_status close(conc_list* h) noexcept { return conc_list_close(h); }
};

struct queue_kind {
    using handle = conc_queue;
    static constexpr const char* what = "queue";
    static conc_status unlink(const conc_queue* h) noexcept { return conc_queue_unlink(h); }
    static conc_status close(conc_queue* h) noexcept { return conc_queue_close(h); }
};

}  // namespace detail

// ---------------------------------------------------------------------------
// Shared memory

/// A named shared-memory segment (conc_shm), like Python's SharedMemory.
/// Move-only; the destructor unmaps.
///
/// Who removes the name: a segment made by `create` owns its name and
/// removes it (conc_shm_unlink) when it is destroyed, closed or
/// move-assigned over, unless keep() was called first; so an exception
/// between create and the end of the scope never leaves a segment behind in
/// /dev/shm. One made by `open`, or adopted from a raw conc_shm*, never
/// removes the name. A name already removed (by unlink(), unlink_name() or
/// another process) is not an error then. If another process removed the
/// name and made a new segment under it meanwhile, the owner removes that
/// new name: keep() the segment when other programs manage its name.
/// A child made by a raw fork() that returns from main() destroys its copy
/// too, and removes the name: conc::process children end without running
/// destructors, so they never do.
class shm {
public:
    /// Not a segment: size() 0, name() empty.
    shm() noexcept = default;

    /// Takes ownership of a segment made by conc_shm_create or conc_shm_open
    /// (to unmap it; it never removes the name).
    explicit shm(conc_shm* adopted) noexcept : owner_(adopted, false) {}

    /// A new zero-filled segment of `size` bytes with a fresh random name,
    /// removed when this object is destroyed unless keep() is called.
    static shm create(std::size_t size) {
        conc_shm* s = nullptr;
        detail::check(conc_shm_create(&s, nullptr, size));
        return shm(s, true);
    }

    /// A new zero-filled segment named `name`, removed when this object is
    /// destroyed unless keep() is called. CONC_ERR_ALREADY_EXISTS when the
    /// name is taken, CONC_ERR_INVALID_ARGUMENT for a bad name or size 0.
    static shm create(std::string_view name, std::size_t size) {
        const std::string c_name = detail::c_string(name, "conc::shm::create", "the name");
        conc_shm* s = nullptr;
        detail::check(conc_shm_create(&s, c_name.c_str(), size));
        return shm(s, true);
    }

    /// Attaches to the existing segment `name` (CONC_ERR_NOT_FOUND if none).
    /// Destroying it never removes the name.
    static shm open(std::string_view name) {
        const std::string c_name = detail::c_string(name, "conc::shm::open", "the name");
        conc_shm* s = nullptr;
        detail::check(conc_shm_open(&s, c_name.c_str()));
        return shm(s);
    }

    /// Removes the name `name`.
    static void unlink_name(std::string_view name) {
        const std::string c_name = detail::c_string(name, "conc::shm::unlink_name", "the name");
        detail::check(conc_shm_unlink_name(c_name.c_str()));
    }

    shm(shm&&) noexcept = default;
    shm& operator=(shm&&) noexcept = default;
    shm(const shm&) = delete;
    shm& operator=(const shm&) = delete;
    ~shm() = default;

    bool is_open() const noexcept { return owner_.get() != nullptr; }
    explicit operator bool() const noexcept { return is_open(); }

    std::uint8_t* data() noexcept { return conc_shm_buf(owner_.get()); }
    const std::uint8_t* data() const noexcept { return conc_shm_buf(owner_.get()); }
    std::size_t size() const noexcept { return conc_shm_size(owner_.get()); }
    /// The name, without a leading '/'.
    std::string_view name() const noexcept { return conc_shm_name(owner_.get()); }

    /// The byte at `index`, unchecked.
    std::uint8_t& operator[](std::size_t index) noexcept { return data()[index]; }
    const std::uint8_t& operator[](std::size_t index) const noexcept { return data()[index]; }
    /// The byte at `index`; CONC_ERR_OUT_OF_RANGE past the end.
    std::uint8_t& at(std::size_t index) {
        check_index(index);
        return data()[index];
    }
    const std::uint8_t& at(std::size_t index) const {
        check_index(index);
        return data()[index];
    }

    /// Removes the segment's name now; this map stays usable until closed,
    /// and no longer owns the name. A second unlink throws
    /// CONC_ERR_NOT_FOUND.
    void unlink() const { owner_.unlink("conc::shm::unlink"); }

    /// Keeps the name when this object is destroyed (for a segment that
    /// must outlive it, e.g. for a process that attaches later). No effect
    /// on a segment made by open.
    void keep() noexcept { owner_.keep(); }

    /// True while destroying this object would remove the name: made by
    /// create, neither keep() nor unlink() called.
    bool owns_name() const noexcept { return owner_.owns_name(); }

    /// What the destructor does, reporting a failure: removes the name if
    /// this object owns it (see keep()), then unmaps. Nothing when not open.
    /// Closed either way.
    void close() { owner_.close(); }

    conc_shm* native_handle() const noexcept { return owner_.get(); }
    /// Gives up ownership: the caller closes the returned segment, and the
    /// name stays.
    conc_shm* release() noexcept { return owner_.release(); }

private:
    shm(conc_shm* made, bool owns_name) noexcept : owner_(made, owns_name) {}

    void check_index(std::size_t index) const {
        if (index >= size()) {
            throw error(CONC_ERR_OUT_OF_RANGE, "conc::shm::at(" + std::to_string(index) +
                                                   "): past the end (" + std::to_string(size()) +
                                                   " bytes)");
        }
    }

    detail::named_handle<detail::shm_kind> owner_;
};

// ---------------------------------------------------------------------------
// Shared lists

namespace detail {

template <class T>
struct list_traits;

template <>
struct list_traits<std::int64_t> {
    static constexpr conc_type type = CONC_TYPE_I64;
    static constexpr const char* name = "std::int64_t";
    static conc_status get(const conc_list* l, std::size_t i, std::int64_t* v) noexcept {
        return conc_list_get_i64(l, i, v);
    }
    static conc_status set(conc_list* l, std::size_t i, std::int64_t v) noexcept {
        return conc_list_set_i64(l, i, v);
    }
};

template <>
struct list_traits<double> {
    static constexpr conc_type type = CONC_TYPE_F64;
    static constexpr const char* name = "double";
    static conc_status get(const conc_list* l, std::size_t i, double* v) noexcept {
        return conc_list_get_f64(l, i, v);
    }
    static conc_status set(conc_list* l, std::size_t i, double v) noexcept {
        return conc_list_set_f64(l, i, v);
    }
};

}  // namespace detail

/// What every conc::list has, whatever it holds: the handle, the name
/// ownership rule, name(), size(), item_size(), unlink(), keep(), close().
///
/// Who removes the name: a list made by `create` owns its name and removes
/// it (conc_list_unlink) when it is destroyed, closed or move-assigned
/// over, unless keep() was called first; so an exception between create
/// and the end of the scope never leaves a list behind in /dev/shm. One
/// made by `open` never removes the name. A name already removed is not an
/// error then. (The fine print is conc::shm's: a name removed and reused
/// by another process meanwhile is removed again; a raw fork() child that
/// returns from main() destroys its copies; conc::process children never
/// run destructors.)
class list_base {
public:
    list_base(const list_base&) = delete;
    list_base& operator=(const list_base&) = delete;

    bool is_open() const noexcept { return handle() != nullptr; }
    explicit operator bool() const noexcept { return is_open(); }

    /// The number of elements, fixed at create; 0 when not open.
    std::size_t size() const noexcept { return conc_list_len(handle()); }
    /// The name other processes open, without a leading '/'.
    std::string_view name() const noexcept { return conc_list_name(handle()); }
    /// The largest element in bytes: 8 for numbers, the byte-string
    /// lists' item_size; 0 when not open.
    std::size_t item_size() const noexcept { return conc_list_item_size(handle()); }

    /// Removes the list's name now; this map stays usable until closed,
    /// and no longer owns the name. A second unlink throws
    /// CONC_ERR_NOT_FOUND.
    void unlink() const { owner_.unlink("conc::list::unlink"); }

    /// Keeps the name when this object is destroyed (for a list that must
    /// outlive it). No effect on a list made by open.
    void keep() noexcept { owner_.keep(); }

    /// True while destroying this object would remove the name: made by
    /// create, neither keep() nor unlink() called.
    bool owns_name() const noexcept { return owner_.owns_name(); }

    /// What the destructor does, reporting a failure: removes the name if
    /// this object owns it (see keep()), then unmaps. Nothing when not open.
    /// Closed either way.
    void close() { owner_.close(); }

    conc_list* native_handle() const noexcept { return handle(); }
    /// Gives up ownership: the caller closes the returned list, and the
    /// name stays.
    conc_list* release() noexcept { return owner_.release(); }

protected:
    list_base() noexcept = default;
    list_base(conc_list* l, bool owns_name) noexcept : owner_(l, owns_name) {}
    list_base(list_base&&) noexcept = default;
    list_base& operator=(list_base&&) noexcept = default;
    ~list_base() = default;

    conc_list* handle() const noexcept { return owner_.get(); }
    void require_open(const char* op) const { owner_.require_open(op); }

    /// Opens `name` and checks that it holds `type` (`what` names the
    /// class in the message).
    static conc_list* open_typed(std::string_view name, conc_type type, const char* what) {
        const std::string c_name = detail::c_string(name, "conc::list::open", "the name");
        conc_list* l = nullptr;
        detail::check(conc_list_open(&l, c_name.c_str()));
        if (conc_list_type(l) != type) {
            (void)conc_list_close(l);
            throw error(CONC_ERR_INVALID_ARGUMENT, std::string(what) + "::open(\"" + c_name +
                                                       "\"): the list holds another type");
        }
        return l;
    }

private:
    detail::named_handle<detail::list_kind> owner_;
};

/// A fixed-length shared list of std::int64_t or double (conc_list), like
/// Python's ShareableList: another process attaches by name alone, and
/// forked children (conc::process) share it. Single-element reads and
/// writes are atomic; integer lists also have fetch_add and
/// compare_exchange, atomic across processes. Move-only; the destructor
/// unmaps, and removes the name of a list made by create (see list_base and
/// keep()). For byte strings, see conc::list<std::string> below.
template <class T>
class list : public list_base {
    static_assert(std::is_same_v<T, std::int64_t> || std::is_same_v<T, double>,
                  "conc::list holds std::int64_t, double or std::string");
    using traits = detail::list_traits<T>;

public:
    using value_type = T;

    /// What list[i] gives on a non-const list: reads and writes element i.
    class reference {
    public:
        operator T() const { return list_->get(index_); }
        reference& operator=(T value) {
            list_->set(index_, value);
            return *this;
        }
        reference& operator=(const reference& other) { return *this = static_cast<T>(other); }
        reference(const reference&) = default;

    private:
        friend class list;
        reference(list* l, std::size_t index) noexcept : list_(l), index_(index) {}
        list* list_;
        std::size_t index_;
    };

    /// Not a list: size() 0, name() empty.
    list() noexcept = default;

    /// A new zero-filled list of `len` elements with a fresh random name,
    /// removed when this object is destroyed unless keep() is called.
    static list create(std::size_t len) {
        conc_list* l = nullptr;
        detail::check(conc_list_create(&l, nullptr, traits::type, len));
        return list(l, true);
    }

    /// A new zero-filled list named `name` (the shared-memory name rules),
    /// removed when this object is destroyed unless keep() is called.
    static list create(std::string_view name, std::size_t len) {
        const std::string c_name = detail::c_string(name, "conc::list::create", "the name");
        conc_list* l = nullptr;
        detail::check(conc_list_create(&l, c_name.c_str(), traits::type, len));
        return list(l, true);
    }

    /// Attaches to the list `name`; CONC_ERR_INVALID_ARGUMENT when it holds
    /// another element type or is not a list. Never removes the name.
    static list open(std::string_view name) {
        return list(open_typed(name, traits::type,
                               (std::string("conc::list<") + traits::name + ">").c_str()),
                    false);
    }

    list(list&&) noexcept = default;
    list& operator=(list&&) noexcept = default;
    ~list() = default;

    /// Element `index`; CONC_ERR_OUT_OF_RANGE past the end.
    T get(std::size_t index) const {
        require_open("conc::list::get");
        T value{};
        detail::check(traits::get(handle(), index, &value));
        return value;
    }

    /// Sets element `index`; CONC_ERR_OUT_OF_RANGE past the end.
    void set(std::size_t index, T value) {
        require_open("conc::list::set");
        detail::check(traits::set(handle(), index, value));
    }

    /// Adds `delta` to element `index` atomically (wrapping around on
    /// overflow) and returns the value it held before, like
    /// std::atomic::fetch_add. Integer lists only.
    std::int64_t fetch_add(std::size_t index, std::int64_t delta) {
        static_assert(std::is_same_v<T, std::int64_t>, "fetch_add needs a conc::list<std::int64_t>");
        require_open("conc::list::fetch_add");
        std::int64_t previous = 0;
        detail::check(conc_list_add_i64(handle(), index, delta, &previous));
        return previous;
    }

    /// Stores `desired` in element `index` if it equals `expected`, atomically,
    /// like std::atomic::compare_exchange_strong: true when it did; false
    /// when it did not, with `expected` set to the value found. Integer
    /// lists only.
    bool compare_exchange(std::size_t index, std::int64_t& expected, std::int64_t desired) {
        static_assert(std::is_same_v<T, std::int64_t>,
                      "compare_exchange needs a conc::list<std::int64_t>");
        require_open("conc::list::compare_exchange");
        std::int64_t actual = expected;
        const conc_status st = conc_list_compare_exchange_i64(handle(), index, expected, desired, &actual);
        if (st == CONC_ERR_BUSY) {
            expected = actual;
            return false;
        }
        detail::check(st);
        return true;
    }

    /// Checked like get() and set(): `list[i] = v; T x = list[i];`.
    reference operator[](std::size_t index) noexcept { return reference(this, index); }
    T operator[](std::size_t index) const { return get(index); }

private:
    list(conc_list* made, bool owns_name) noexcept : list_base(made, owns_name) {}
};

/// A fixed-length shared list of byte strings (a conc_list of
/// CONC_TYPE_BYTES), like Python's ShareableList of str or bytes: each
/// element holds 0 to item_size() bytes (any bytes, NUL included) and
/// keeps its length. std::string_view in, std::string out. A reader never
/// sees a torn element, whatever writers in other processes do, and a
/// writer killed in the middle of a write leaves the old or the new value.
/// Everything else as conc::list (name ownership and keep() included).
///
///   auto names = conc::list<std::string>::create(10, 64);  // 10 x up to 64 bytes
///   names[0] = "alice";  std::string who = names[0];
template <>
class list<std::string> : public list_base {
public:
    using value_type = std::string;

    /// What list[i] gives on a non-const list: reads and writes element i.
    class reference {
    public:
        operator std::string() const { return list_->get(index_); }
        reference& operator=(std::string_view value) {
            list_->set(index_, value);
            return *this;
        }
        reference& operator=(const reference& other) {
            return *this = std::string_view(static_cast<std::string>(other));
        }
        reference(const reference&) = default;
        /// Compares the element's current value: `list[i] == "text"`.
        friend bool operator==(const reference& r, std::string_view text) {
            return static_cast<std::string>(r) == text;
        }
        friend bool operator!=(const reference& r, std::string_view text) { return !(r == text); }

    private:
        friend class list;
        reference(list* l, std::size_t index) noexcept : list_(l), index_(index) {}
        list* list_;
        std::size_t index_;
    };

    /// Not a list: size() 0, name() empty.
    list() noexcept = default;

    /// A new list of `len` empty elements of up to `item_size` bytes with a
    /// fresh random name, removed when this object is destroyed unless
    /// keep() is called. `item_size` 0: CONC_ERR_INVALID_ARGUMENT.
    static list create(std::size_t len, std::size_t item_size) {
        conc_list* l = nullptr;
        detail::check(conc_list_create_bytes(&l, nullptr, len, item_size));
        return list(l, true);
    }

    /// A new list named `name`, as above.
    static list create(std::string_view name, std::size_t len, std::size_t item_size) {
        const std::string c_name = detail::c_string(name, "conc::list::create", "the name");
        conc_list* l = nullptr;
        detail::check(conc_list_create_bytes(&l, c_name.c_str(), len, item_size));
        return list(l, true);
    }

    /// Attaches to the byte-string list `name`; CONC_ERR_INVALID_ARGUMENT
    /// when it holds numbers or is not a list. Never removes the name.
    static list open(std::string_view name) {
        return list(open_typed(name, CONC_TYPE_BYTES, "conc::list<std::string>"), false);
    }

    list(list&&) noexcept = default;
    list& operator=(list&&) noexcept = default;
    ~list() = default;

    /// Element `index`, whole; CONC_ERR_OUT_OF_RANGE past the end. Reads
    /// through a buffer of item_size() bytes: in a loop over a list with a
    /// large item size, get(index, out) reuses one string instead.
    std::string get(std::size_t index) const {
        std::string value;
        get(index, value);
        return value;
    }

    /// Element `index` into `out` (reusing its capacity, for loops).
    void get(std::size_t index, std::string& out) const {
        require_open("conc::list::get");
        out.resize(item_size());
        std::size_t n = 0;
        detail::check(conc_list_get_bytes(handle(), index, out.data(), out.size(), &n));
        out.resize(n);
    }

    /// Sets element `index` to the bytes of `value`; CONC_ERR_OUT_OF_RANGE
    /// past the end or when `value` is longer than item_size() (the
    /// element keeps its value).
    void set(std::size_t index, std::string_view value) {
        require_open("conc::list::set");
        detail::check(conc_list_set_bytes(handle(), index, value.data(), value.size()));
    }

    /// Checked like get() and set(): `list[i] = "text"; std::string s = list[i];`.
    reference operator[](std::size_t index) noexcept { return reference(this, index); }
    std::string operator[](std::size_t index) const { return get(index); }

private:
    list(conc_list* made, bool owns_name) noexcept : list_base(made, owns_name) {}
};

// ---------------------------------------------------------------------------
// Child processes

/// A child process (conc_process): a fork of the caller running any
/// callable that returns int (its exit status, 0-255) or void (0). The
/// child sees the caller's memory as it was, so the callable may capture
/// by reference; it shares conc::shm, conc::list and anonymous maps.
///
/// An exception escaping the callable in the child is printed to stderr
/// and the child exits with 1, as a Python child process does. Move-only.
///
/// A joinable process that is destroyed or move-assigned over kills its
/// child (SIGKILL) and reaps it, as Boost.Process does, instead of waiting
/// for ever: so an exception thrown between the spawn and the join never
/// hangs the program on a child that does not end. Join (or join_for) the
/// child to wait for it. (This changed in 0.2: 0.1 joined.)
class process {
public:
    /// Not a process: joinable() is false.
    process() noexcept = default;

    /// Forks a child running `f(args...)`. Throws conc::error.
    template <class F, class... Args,
              class = std::enable_if_t<!std::is_same_v<detail::remove_cvref_t<F>, process>>>
    explicit process(F&& f, Args&&... args) {
        auto call = [&]() -> decltype(auto) {
            return std::invoke(std::forward<F>(f), std::forward<Args>(args)...);
        };
        using result = decltype(call());
        static_assert(std::is_void_v<result> || std::is_convertible_v<result, int>,
                      "conc::process: the callable must return int (the exit status) or void");
        // What iostreams hold unflushed would otherwise be printed twice.
        std::cout.flush();
        std::clog.flush();
        conc_process handle{0};
        detail::check(conc_process_spawn(&handle, &entry<decltype(call)>, &call));
        handle_ = handle;
    }

    process(process&& other) noexcept : handle_(std::exchange(other.handle_, conc_process{0})) {}
    /// Kills and reaps this process first if it is joinable, then takes
    /// `other`'s.
    process& operator=(process&& other) noexcept {
        if (this != &other) {
            kill_quietly();
            handle_ = std::exchange(other.handle_, conc_process{0});
        }
        return *this;
    }
    process(const process&) = delete;
    process& operator=(const process&) = delete;
    ~process() { kill_quietly(); }

    bool joinable() const noexcept { return handle_.pid != 0; }
    /// The child's process id (0 when not joinable).
    std::int64_t pid() const noexcept { return handle_.pid; }
    conc_process native_handle() const noexcept { return handle_; }

    /// Waits for the child; returns its exit status (0-255), or 128 + the
    /// signal number if a signal killed it. CONC_ERR_INVALID_STATE when not
    /// joinable.
    int join() {
        if (!joinable()) {
            throw error(CONC_ERR_INVALID_STATE,
                        "conc::process::join: the process is not joinable "
                        "(default-constructed, moved from or joined)");
        }
        int code = 0;
        detail::check(conc_process_join(handle_, &code));
        handle_ = conc_process{0};
        return code;
    }

    /// Waits at most `timeout` (rounded up to milliseconds, on the
    /// monotonic clock) for the child: its exit status as join() gives it,
    /// or std::nullopt if it is still running (it stays joinable). A zero
    /// timeout polls: `!p.join_for(0s)` is Python's `p.is_alive()`.
    /// CONC_ERR_INVALID_STATE when not joinable.
    template <class Rep, class Period>
    std::optional<int> join_for(const std::chrono::duration<Rep, Period>& timeout) {
        require_joinable("conc::process::join_for");
        const auto ms = std::chrono::ceil<std::chrono::milliseconds>(timeout).count();
        int code = 0;
        const conc_status s = conc_process_join_timeout(
            handle_, ms <= 0 ? 0 : static_cast<std::uint64_t>(ms), &code);
        if (s == CONC_ERR_TIMED_OUT) {
            return std::nullopt;
        }
        detail::check(s);
        handle_ = conc_process{0};
        return code;
    }

    /// Sends `signal` to the child (SIGTERM, SIGKILL: Python's terminate()
    /// and kill()); 0 only checks that it has not been joined. A child that
    /// has ended but is not joined yet is not an error. Never reaches a
    /// process conc did not spawn. CONC_ERR_INVALID_STATE when not
    /// joinable, CONC_ERR_INVALID_ARGUMENT for a bad signal number.
    void kill(int signal) {
        require_joinable("conc::process::kill");
        detail::check(conc_process_kill(handle_, signal));
    }

    /// A descriptor that poll() sees readable when the child ends (Python's
    /// sentinel): owned by conc, valid until the join, never to be closed.
    /// -1 when not joinable, or on a kernel without pidfd (before 5.3).
    int fd() const noexcept { return joinable() ? conc_process_fd(handle_) : -1; }

private:
    // The conc_process_fn, run in the child: no exception may cross into C.
    template <class Call>
    static int entry(void* arg) noexcept {
        int code = 1;
        try {
            Call& call = *static_cast<Call*>(arg);
            if constexpr (std::is_void_v<decltype(call())>) {
                call();
                code = 0;
            } else {
                code = static_cast<int>(call());
            }
        } catch (const std::exception& e) {
            std::fprintf(stderr, "conc::process: uncaught exception in the child: %s\n", e.what());
        } catch (...) {
            std::fprintf(stderr, "conc::process: uncaught exception in the child\n");
        }
        // conc flushes C stdio before the child exits; iostreams not synced
        // with stdio keep their own buffers.
        try {
            std::cout.flush();
            std::clog.flush();
        } catch (...) {
        }
        return code;
    }

    void require_joinable(const char* op) const {
        if (!joinable()) {
            throw error(CONC_ERR_INVALID_STATE,
                        std::string(op) +
                            ": the process is not joinable (default-constructed, moved from or joined)");
        }
    }

    // SIGKILL cannot be caught or ignored, so the join returns.
    void kill_quietly() noexcept {
        if (joinable()) {
            (void)conc_process_kill(handle_, SIGKILL);
            (void)conc_process_join(handle_, nullptr);
        }
        handle_ = conc_process{0};
    }

    conc_process handle_{0};
};

// ---------------------------------------------------------------------------
// Synchronization

// conc::mutex, conc::condition_variable, conc::semaphore, conc::barrier and
// conc::event are the C structs (conc_mutex, conc_cond, conc_sem,
// conc_barrier, conc_event) with member functions: each holds exactly its C
// struct and nothing else, so it has the C struct's size, alignment (at most
// 8) and layout, and all-zero bytes are a ready object (an unlocked mutex, a
// condition variable, a semaphore at 0, a cleared event; a barrier needs its
// count). The same object works between threads and between processes:
//
//   auto seg = conc::shm::create(4096);
//   auto* m = new (seg.data()) conc::mutex;          // placement new, or
//   auto* e = reinterpret_cast<conc::event*>(seg.data() + 64);  // zero bytes
//
// Like std::mutex they are neither copyable nor movable, and their
// destructors do nothing (no destroy call, none needed in shared memory).
//
// Robust mutexes: when the holder of a conc::mutex ended without unlocking
// it (its thread exited, its process was killed), the next lock() or
// try_lock() takes the mutex and throws conc::owner_dead. The thread then
// holds the mutex: it repairs the data, calls consistent() and unlocks. A
// lock guard whose constructor threw does not own the mutex, so adopt it:
//
//   try {
//       std::lock_guard<conc::mutex> guard(m);
//       use(data);
//   } catch (const conc::owner_dead&) {
//       std::lock_guard<conc::mutex> guard(m, std::adopt_lock);
//       repair(data);
//       m.consistent();
//   }
//
// Unlocking without consistent() leaves the mutex unusable: every later
// lock throws conc::error with CONC_ERR_INVALID_STATE.
//
// Durations are relative, measured on a monotonic clock, and rounded up to
// whole milliseconds; zero or negative polls once.

/// Thrown by conc::mutex::lock() and try_lock() (and the condition variable's
/// waits) when the mutex was taken but its previous holder had died holding
/// it: the caller now holds the mutex, and the data it guards may be
/// half-updated. status() is CONC_ERR_OWNER_DEAD.
class owner_dead : public error {
public:
    explicit owner_dead(const std::string& message, int os_error = 0)
        : error(CONC_ERR_OWNER_DEAD, message, os_error) {}
};

namespace detail {

/// A C timeout for `duration`: whole milliseconds rounded up, 0 for zero or
/// negative durations, saturated (UINT64_MAX: about 584 million years) for
/// durations too long to count in milliseconds.
template <class Rep, class Period>
std::uint64_t sync_timeout_ms(const std::chrono::duration<Rep, Period>& duration) {
    if (!(duration > duration.zero())) {
        return 0;  // also a NaN
    }
    // Checked in floating point first, so that converting hours::max() (or
    // a huge double) to milliseconds cannot overflow.
    const std::chrono::duration<long double, std::milli> as_ms = duration;
    if (as_ms.count() >= 9.0e18L) {
        return UINT64_MAX;
    }
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(duration).count();
    return ms > 0 ? static_cast<std::uint64_t>(ms) : 1;
}

/// Throws for a status that locked the mutex of a dead holder.
[[noreturn]] inline void throw_owner_dead() {
    throw owner_dead(conc_last_error_message(), conc_last_os_error());
}

/// Checks a call that may have taken a mutex whose holder died.
inline void check_locked(conc_status status) {
    if (status == CONC_ERR_OWNER_DEAD) {
        throw_owner_dead();
    }
    check(status);
}

}  // namespace detail

/// A robust, error-checking, non-recursive mutex (conc_mutex), usable with
/// std::lock_guard, std::unique_lock and std::scoped_lock, between threads
/// and between processes. Meets Lockable and TimedLockable (try_lock_for).
class mutex {
public:
    /// An unlocked mutex (all-zero bytes).
    constexpr mutex() noexcept : m_{} {}
    mutex(const mutex&) = delete;
    mutex& operator=(const mutex&) = delete;
    ~mutex() = default;

    /// Waits for the mutex and takes it. Throws conc::owner_dead (the mutex
    /// taken) when its holder died holding it; conc::error with
    /// CONC_ERR_DEADLOCK when the caller holds it already, CONC_ERR_INVALID_STATE
    /// when it became unusable.
    void lock() { detail::check_locked(conc_mutex_lock(&m_)); }

    /// Takes the mutex if it is free: true, or false when anyone (the caller
    /// included) holds it. Throws conc::owner_dead (the mutex taken) and
    /// conc::error as lock() does.
    bool try_lock() {
        const conc_status status = conc_mutex_trylock(&m_);
        if (status == CONC_ERR_BUSY) {
            return false;
        }
        detail::check_locked(status);
        return true;
    }

    /// Waits at most `duration` (rounded up to milliseconds) for the mutex:
    /// true when taken, false on timeout. Throws as lock() does.
    template <class Rep, class Period>
    bool try_lock_for(const std::chrono::duration<Rep, Period>& duration) {
        const conc_status status = conc_mutex_lock_timeout(&m_, detail::sync_timeout_ms(duration));
        if (status == CONC_ERR_TIMED_OUT) {
            return false;
        }
        detail::check_locked(status);
        return true;
    }

    /// Releases the mutex. Throws conc::error with CONC_ERR_INVALID_STATE when
    /// the caller does not hold it (nothing changes then).
    void unlock() { detail::check(conc_mutex_unlock(&m_)); }

    /// Marks the data repaired after conc::owner_dead, so that the mutex
    /// stays usable. CONC_ERR_INVALID_STATE when the caller does not hold the
    /// mutex or the mutex was not in that state.
    void consistent() { detail::check(conc_mutex_consistent(&m_)); }

    conc_mutex* native_handle() noexcept { return &m_; }

private:
    conc_mutex m_;
};

/// A condition variable (conc_cond) for a conc::mutex held through a
/// std::unique_lock, with std::condition_variable's member functions and
/// results; waiters and notifiers may be in different processes. Each wait
/// holds the mutex again when it returns or throws; it throws
/// conc::owner_dead (mutex held) when re-taking it met a dead holder, and
/// conc::error with CONC_ERR_INVALID_STATE when the lock does not hold the
/// mutex.
class condition_variable {
public:
    constexpr condition_variable() noexcept : c_{} {}
    condition_variable(const condition_variable&) = delete;
    condition_variable& operator=(const condition_variable&) = delete;
    ~condition_variable() = default;

    /// Wakes at least one waiter, if any.
    void notify_one() { detail::check(conc_cond_signal(&c_)); }
    /// Wakes every waiter.
    void notify_all() { detail::check(conc_cond_broadcast(&c_)); }

    /// Releases the mutex, sleeps until notified (or spuriously), takes the
    /// mutex again.
    void wait(std::unique_lock<mutex>& lock) {
        detail::check_locked(conc_cond_wait(&c_, native_mutex(lock, "wait")));
    }

    /// Waits until `pred()` is true: `while (!pred()) wait(lock);`.
    template <class Predicate>
    void wait(std::unique_lock<mutex>& lock, Predicate pred) {
        while (!pred()) {
            wait(lock);
        }
    }

    /// Waits at most `duration`: std::cv_status::timeout when the time ran
    /// out, no_timeout when woken (perhaps spuriously).
    template <class Rep, class Period>
    std::cv_status wait_for(std::unique_lock<mutex>& lock,
                            const std::chrono::duration<Rep, Period>& duration) {
        const conc_status status = conc_cond_wait_timeout(&c_, native_mutex(lock, "wait_for"),
                                                          detail::sync_timeout_ms(duration));
        if (status == CONC_ERR_TIMED_OUT) {
            return std::cv_status::timeout;
        }
        detail::check_locked(status);
        return std::cv_status::no_timeout;
    }

    /// Waits until `pred()` is true or `duration` has passed; returns
    /// `pred()`'s last value, as std::condition_variable does.
    template <class Rep, class Period, class Predicate>
    bool wait_for(std::unique_lock<mutex>& lock, const std::chrono::duration<Rep, Period>& duration,
                  Predicate pred) {
        const std::uint64_t ms = detail::sync_timeout_ms(duration);
        if (ms >= (std::uint64_t{1} << 40)) {
            // Over 34 years: a deadline on steady_clock could overflow.
            wait(lock, std::move(pred));
            return true;
        }
        using clock = std::chrono::steady_clock;
        const clock::time_point deadline =
            clock::now() + std::chrono::milliseconds(static_cast<std::int64_t>(ms));
        while (!pred()) {
            const clock::duration left = deadline - clock::now();
            if (left <= clock::duration::zero() ||
                wait_for(lock, left) == std::cv_status::timeout) {
                return pred();
            }
        }
        return true;
    }

    conc_cond* native_handle() noexcept { return &c_; }

private:
    static conc_mutex* native_mutex(std::unique_lock<mutex>& lock, const char* op) {
        if (lock.mutex() == nullptr) {
            throw error(CONC_ERR_INVALID_STATE, std::string("conc::condition_variable::") + op +
                                                    ": the lock has no mutex");
        }
        return lock.mutex()->native_handle();
    }

    conc_cond c_;
};

/// A counting semaphore (conc_sem), between threads or processes.
class semaphore {
public:
    /// A semaphore at `initial`; conc::error with CONC_ERR_OUT_OF_RANGE
    /// above CONC_SEM_VALUE_MAX.
    explicit semaphore(std::uint32_t initial = 0) : s_{} {
        if (initial != 0) {
            detail::check(conc_sem_init(&s_, initial));
        }
    }
    semaphore(const semaphore&) = delete;
    semaphore& operator=(const semaphore&) = delete;
    ~semaphore() = default;

    /// Waits until the count is above 0 and takes one.
    void acquire() { detail::check(conc_sem_wait(&s_)); }

    /// Takes one if the count is above 0: true; false at 0.
    bool try_acquire() {
        const conc_status status = conc_sem_trywait(&s_);
        if (status == CONC_ERR_BUSY) {
            return false;
        }
        detail::check(status);
        return true;
    }

    /// Waits at most `duration` to take one: false on timeout.
    template <class Rep, class Period>
    bool try_acquire_for(const std::chrono::duration<Rep, Period>& duration) {
        const conc_status status = conc_sem_wait_timeout(&s_, detail::sync_timeout_ms(duration));
        if (status == CONC_ERR_TIMED_OUT) {
            return false;
        }
        detail::check(status);
        return true;
    }

    /// Adds one and wakes a waiter. conc::error with CONC_ERR_OUT_OF_RANGE
    /// at CONC_SEM_VALUE_MAX (the count stays).
    void release() { detail::check(conc_sem_post(&s_)); }

    /// The current count (already stale when other threads use it).
    std::uint32_t value() const noexcept { return conc_sem_value(&s_); }

    conc_sem* native_handle() noexcept { return &s_; }

private:
    conc_sem s_;
};

/// A reusable barrier (conc_barrier) for `count` callers per round, between
/// threads or processes.
class barrier {
public:
    /// A barrier for groups of `count` (at least 1: conc::error with
    /// CONC_ERR_INVALID_ARGUMENT for 0).
    explicit barrier(std::uint32_t count) : b_{} { detail::check(conc_barrier_init(&b_, count)); }
    barrier(const barrier&) = delete;
    barrier& operator=(const barrier&) = delete;
    ~barrier() = default;

    /// Waits until `count` callers have arrived; true in exactly one caller
    /// of each round (the leader). A zero-filled barrier that was never
    /// given a count: conc::error with CONC_ERR_INVALID_STATE.
    bool arrive_and_wait() {
        bool leader = false;
        detail::check(conc_barrier_wait(&b_, &leader));
        return leader;
    }

    conc_barrier* native_handle() noexcept { return &b_; }

private:
    conc_barrier b_;
};

/// A flag that can be waited for (conc_event), like Python's
/// multiprocessing.Event, between threads or processes.
class event {
public:
    /// A cleared event (all-zero bytes).
    constexpr event() noexcept : e_{} {}
    event(const event&) = delete;
    event& operator=(const event&) = delete;
    ~event() = default;

    /// Sets the flag and wakes every waiter.
    void set() { detail::check(conc_event_set(&e_)); }
    /// Clears the flag.
    void clear() { detail::check(conc_event_clear(&e_)); }
    bool is_set() const noexcept { return conc_event_is_set(&e_); }

    /// Waits until the flag is set.
    void wait() { detail::check(conc_event_wait(&e_)); }

    /// Waits at most `duration` for the flag: false on timeout.
    template <class Rep, class Period>
    bool wait_for(const std::chrono::duration<Rep, Period>& duration) {
        const conc_status status = conc_event_wait_timeout(&e_, detail::sync_timeout_ms(duration));
        if (status == CONC_ERR_TIMED_OUT) {
            return false;
        }
        detail::check(status);
        return true;
    }

    conc_event* native_handle() noexcept { return &e_; }

private:
    conc_event e_;
};

// The C++ objects are their C structs: same size, alignment and layout, so
// they can live in shared memory next to C code using the C structs.
static_assert(sizeof(mutex) == sizeof(conc_mutex) && alignof(mutex) == alignof(conc_mutex) &&
              std::is_standard_layout_v<mutex> && std::is_trivially_destructible_v<mutex>);
static_assert(sizeof(condition_variable) == sizeof(conc_cond) &&
              alignof(condition_variable) == alignof(conc_cond) &&
              std::is_standard_layout_v<condition_variable> &&
              std::is_trivially_destructible_v<condition_variable>);
static_assert(sizeof(semaphore) == sizeof(conc_sem) && alignof(semaphore) == alignof(conc_sem) &&
              std::is_standard_layout_v<semaphore> && std::is_trivially_destructible_v<semaphore>);
static_assert(sizeof(barrier) == sizeof(conc_barrier) &&
              alignof(barrier) == alignof(conc_barrier) && std::is_standard_layout_v<barrier> &&
              std::is_trivially_destructible_v<barrier>);
static_assert(sizeof(event) == sizeof(conc_event) && alignof(event) == alignof(conc_event) &&
              std::is_standard_layout_v<event> && std::is_trivially_destructible_v<event>);

// ---------------------------------------------------------------------------
// Queues between processes

namespace detail {

/// A duration as conc's timeout_ms: rounded up to whole milliseconds,
/// negative as 0, anything beyond 500 million years as "never".
template <class Rep, class Period>
std::uint64_t queue_timeout_ms(const std::chrono::duration<Rep, Period>& duration) {
    const double ms = std::chrono::duration<double, std::milli>(duration).count();
    if (!(ms > 0)) {
        return 0;
    }
    if (ms >= 1.5e19) {
        return UINT64_MAX;
    }
    auto whole = static_cast<std::uint64_t>(ms);
    if (static_cast<double>(whole) < ms) {
        ++whole;
    }
    return whole;
}

}  // namespace detail

/// A bounded FIFO of `T` values between processes (conc_queue), the
/// counterpart of Python's multiprocessing.Queue for trivially copyable
/// types: any number of processes push and pop, by name or through a
/// fork, and a killed peer never breaks it. Move-only; the destructor
/// closes it, and a queue made by create() also removes its name unless
/// keep() was called (one made by open() never does), so an exception
/// never leaves a segment behind. pop() needs T default-constructible.
///
/// Once the queue is shut down and empty, pop(), try_pop() and pop_for()
/// throw conc::error with CONC_ERR_SHUTDOWN; push() throws it at once.
template <class T>
class queue {
    static_assert(std::is_trivially_copyable_v<T>,
                  "conc::queue<T> copies T's bytes between processes: T must be trivially copyable");

public:
    using value_type = T;

    /// Not a queue: capacity() 0, name() empty.
    queue() noexcept = default;

    /// A new queue of `capacity` values with a fresh random name.
    static queue create(std::size_t capacity) {
        conc_queue* q = nullptr;
        detail::check(conc_queue_create(&q, nullptr, capacity, sizeof(T)));
        return queue(q, true);
    }

    /// A new queue of `capacity` values named `name` (the shared-memory
    /// name rules). CONC_ERR_ALREADY_EXISTS when the name is taken.
    static queue create(std::string_view name, std::size_t capacity) {
        const std::string c_name = detail::c_string(name, "conc::queue::create", "the name");
        conc_queue* q = nullptr;
        detail::check(conc_queue_create(&q, c_name.c_str(), capacity, sizeof(T)));
        return queue(q, true);
    }

    /// Attaches to the queue `name`; CONC_ERR_INVALID_ARGUMENT when its
    /// message size is not sizeof(T) or it is not a queue.
    static queue open(std::string_view name) {
        const std::string c_name = detail::c_string(name, "conc::queue::open", "the name");
        conc_queue* q = nullptr;
        detail::check(conc_queue_open(&q, c_name.c_str()));
        queue opened(q, false);
        if (conc_queue_message_size(q) != sizeof(T)) {
            throw error(CONC_ERR_INVALID_ARGUMENT,
                        "conc::queue::open(\"" + c_name + "\"): its messages have " +
                            std::to_string(conc_queue_message_size(q)) + " bytes, sizeof(T) is " +
                            std::to_string(sizeof(T)));
        }
        return opened;
    }

    queue(queue&&) noexcept = default;
    queue& operator=(queue&&) noexcept = default;
    queue(const queue&) = delete;
    queue& operator=(const queue&) = delete;
    ~queue() = default;

    bool is_open() const noexcept { return owner_.get() != nullptr; }
    explicit operator bool() const noexcept { return is_open(); }

    /// Values waiting (a snapshot).
    std::size_t size() const noexcept { return conc_queue_len(owner_.get()); }
    std::size_t capacity() const noexcept { return conc_queue_capacity(owner_.get()); }
    /// The name, without a leading '/'.
    std::string_view name() const noexcept { return conc_queue_name(owner_.get()); }

    /// Pushes `value`, waiting while the queue is full.
    void push(const T& value) {
        require_open("conc::queue::push");
        detail::check(conc_queue_push(owner_.get(), &value, sizeof(T)));
    }

    /// Pushes `value` if there is room now; false when full.
    bool try_push(const T& value) {
        require_open("conc::queue::try_push");
        const conc_status st = conc_queue_try_push(owner_.get(), &value, sizeof(T));
        if (st == CONC_ERR_BUSY) {
            return false;
        }
        detail::check(st);
        return true;
    }

    /// Pushes `value`, waiting at most `timeout` for room; false on timeout.
    template <class Rep, class Period>
    bool push_for(const T& value, const std::chrono::duration<Rep, Period>& timeout) {
        require_open("conc::queue::push_for");
        const conc_status st =
            conc_queue_push_timeout(owner_.get(), &value, sizeof(T), detail::queue_timeout_ms(timeout));
        if (st == CONC_ERR_TIMED_OUT) {
            return false;
        }
        detail::check(st);
        return true;
    }

    /// Pops the first value, waiting while the queue is empty.
    T pop() {
        require_open("conc::queue::pop");
        storage s;
        receive(s, conc_queue_pop(owner_.get(), s.bytes(), sizeof(T), &s.len));
        return s.value();
    }

    /// The first value, or std::nullopt when the queue is merely empty.
    std::optional<T> try_pop() {
        require_open("conc::queue::try_pop");
        storage s;
        const conc_status st = conc_queue_try_pop(owner_.get(), s.bytes(), sizeof(T), &s.len);
        if (st == CONC_ERR_BUSY) {
            return std::nullopt;
        }
        receive(s, st);
        return s.value();
    }

    /// The first value, waiting at most `timeout`; std::nullopt on timeout.
    template <class Rep, class Period>
    std::optional<T> pop_for(const std::chrono::duration<Rep, Period>& timeout) {
        require_open("conc::queue::pop_for");
        storage s;
        const conc_status st = conc_queue_pop_timeout(
            owner_.get(), detail::queue_timeout_ms(timeout), s.bytes(), sizeof(T), &s.len);
        if (st == CONC_ERR_TIMED_OUT) {
            return std::nullopt;
        }
        receive(s, st);
        return s.value();
    }

    /// Ends the queue's life for every process (see conc_queue_shutdown).
    void shutdown() {
        require_open("conc::queue::shutdown");
        detail::check(conc_queue_shutdown(owner_.get()));
    }

    /// Keeps the name when this queue (made by create) is destroyed.
    void keep() noexcept { owner_.keep(); }

    /// True while destroying this object would remove the name: made by
    /// create, neither keep() nor unlink() called.
    bool owns_name() const noexcept { return owner_.owns_name(); }

    /// Removes the queue's name now; this handle stays usable until
    /// closed, and no longer owns the name. A second unlink throws
    /// CONC_ERR_NOT_FOUND.
    void unlink() const { owner_.unlink("conc::queue::unlink"); }

    /// Closes now (removing the name first if create made it and keep()
    /// was not called; a name already removed is not an error), reporting
    /// a failure; nothing when not open. Closed either way.
    void close() { owner_.close(); }

    conc_queue* native_handle() const noexcept { return owner_.get(); }
    /// Gives up ownership: the caller closes (and unlinks) the queue.
    conc_queue* release() noexcept { return owner_.release(); }

private:
    queue(conc_queue* adopted, bool owns_name) noexcept : owner_(adopted, owns_name) {}

    /// One popped T and the length conc reported.
    struct storage {
        T item{};
        std::size_t len = 0;
        void* bytes() noexcept { return static_cast<void*>(&item); }
        T value() const { return item; }
    };

    void receive(const storage& s, conc_status st) const {
        detail::check(st);
        if (s.len != sizeof(T)) {
            throw error(CONC_ERR_INVALID_STATE,
                        "conc::queue::pop: a message of " + std::to_string(s.len) +
                            " bytes, where a T has " + std::to_string(sizeof(T)) +
                            " (pushed by a C program?)");
        }
    }

    void require_open(const char* op) const { owner_.require_open(op); }

    detail::named_handle<detail::queue_kind> owner_;
};

// ---------------------------------------------------------------------------
// Thread pools, tasks and parallel loops
//
//   conc::parallel_for(0, n, [&](std::size_t i) { y[i] += a * x[i]; });
//   auto t = conc::spawn([](int n) { return fib(n); }, 30);   // conc::task<long>
//   long value = t.join();                     // or rethrows what it threw
//   conc::pool p(4);  auto u = p.spawn(f);  p.parallel_for(0, n, g);

/// A task queued on a pool (conc::spawn, conc::pool::spawn): join() gives
/// what its callable returned, or rethrows the exception that escaped it.
/// Move-only. A task still joinable when destroyed (or assigned over) is
/// joined first, its result and exception discarded. Joining from inside
/// another task is fine, to any depth: the waiting thread runs queued
/// tasks meanwhile.
template <class R>
class task {
public:
    using result_type = R;

    /// Not a task: joinable() is false.
    task() noexcept = default;

    /// Queues `f(args...)` (on decayed copies, like std::thread) on `pool`
    /// (nullptr: the default pool). Throws conc::error.
    template <class F, class... Args>
    task(conc_pool* pool, F&& f, Args&&... args) {
        using result = detail::invoke_result_t<F, Args...>;
        static_assert(std::is_void_v<R> || std::is_convertible_v<result, R>,
                      "conc::task<R>: the callable's result does not convert to R");
        using state_type = detail::thread_state<R, std::decay_t<F>, std::decay_t<Args>...>;
        using ticket = typename state_type::ticket;
        auto state = std::make_shared<state_type>(std::forward<F>(f), std::forward<Args>(args)...);
        auto owner = std::make_unique<ticket>(state);
        conc_task handle{0};
        detail::check(conc_task_spawn(&handle, pool, &state_type::entry, owner.get()));
        (void)owner.release();  // the task frees it
        handle_ = handle;
        state_ = std::move(state);
    }

    task(task&& other) noexcept
        : handle_(std::exchange(other.handle_, conc_task{0})),
          state_(std::move(other.state_)),
          done_(std::exchange(other.done_, false)) {}

    /// Joins this task first if it is joinable, then takes `other`'s.
    task& operator=(task&& other) noexcept {
        if (this != &other) {
            join_quietly();
            handle_ = std::exchange(other.handle_, conc_task{0});
            state_ = std::move(other.state_);
            done_ = std::exchange(other.done_, false);
        }
        return *this;
    }

    task(const task&) = delete;
    task& operator=(const task&) = delete;

    ~task() { join_quietly(); }

    /// True until join() succeeds, or the handle is moved from.
    bool joinable() const noexcept { return handle_.id != 0 || done_; }

    /// The C handle (id 0 when not joinable, or once wait_for saw it finish).
    conc_task native_handle() const noexcept { return handle_; }

    /// Waits for the task and returns what the callable returned, or
    /// rethrows the exception that escaped it. Throws conc::error with
    /// CONC_ERR_INVALID_STATE when not joinable.
    R join() {
        if (!joinable()) {
            throw error(CONC_ERR_INVALID_STATE,
                        "conc::task::join: the task is not joinable "
                        "(default-constructed, moved from or joined)");
        }
        if (!done_) {
            detail::check(conc_task_join(handle_, nullptr));
        }
        handle_ = conc_task{0};
        done_ = false;
        auto state = std::move(state_);
        if (state->exception) {
            std::rethrow_exception(state->exception);
        }
        return state->result.take();
    }

    /// Waits at most `timeout` (rounded up to milliseconds); true when the
    /// task has finished, and then join() returns at once.
    template <class Rep, class Period>
    bool wait_for(const std::chrono::duration<Rep, Period>& timeout) {
        if (!joinable()) {
            throw error(CONC_ERR_INVALID_STATE, "conc::task::wait_for: the task is not joinable");
        }
        if (done_) {
            return true;
        }
        const auto ms = std::chrono::ceil<std::chrono::milliseconds>(timeout).count();
        const conc_status s =
            conc_task_join_timeout(handle_, ms > 0 ? static_cast<std::uint64_t>(ms) : 0, nullptr);
        if (s == CONC_ERR_TIMED_OUT) {
            return false;
        }
        detail::check(s);
        handle_ = conc_task{0};  // joined: join() only hands over the result
        done_ = true;
        return true;
    }

private:
    void join_quietly() noexcept {
        if (joinable()) {
            (void)conc_task_join(handle_, nullptr);
        }
        handle_ = conc_task{0};
        done_ = false;
        state_.reset();
    }

    conc_task handle_{0};
    std::shared_ptr<detail::thread_state_base<R>> state_;
    bool done_ = false;
};

namespace detail {

// The context of a C++ parallel_for: the callable, the first index, and
// the first exception any call threw (later indices are then skipped).
template <class I, class F>
struct for_context {
    using U = std::make_unsigned_t<I>;

    for_context(I first_index, F* callable) noexcept : first(first_index), f(callable) {}

    I first;
    F* f;
    std::atomic<bool> failed{false};
    std::exception_ptr exception;

    static void run(std::size_t b, std::size_t e, void* ctx) noexcept {
        auto& self = *static_cast<for_context*>(ctx);
        if (self.failed.load(std::memory_order_relaxed)) {
            return;
        }
        try {
            for (std::size_t i = b; i < e; ++i) {
                // In unsigned arithmetic: no signed overflow for any bounds.
                (*self.f)(static_cast<I>(static_cast<U>(static_cast<U>(self.first) + static_cast<U>(i))));
            }
        } catch (...) {
            if (!self.failed.exchange(true)) {
                self.exception = std::current_exception();
            }
        }
    }
};

template <class I, class F>
void parallel_for(conc_pool* pool, I begin, I end, std::size_t grain, F& f) {
    static_assert(std::is_integral_v<I>, "conc::parallel_for: the bounds must be integers");
    if (!(begin < end)) {
        return;
    }
    using U = std::make_unsigned_t<I>;
    const auto count = static_cast<std::size_t>(static_cast<U>(static_cast<U>(end) - static_cast<U>(begin)));
    for_context<I, F> ctx(begin, &f);
    detail::check(conc_parallel_for(pool, 0, count, grain, &for_context<I, F>::run, &ctx));
    if (ctx.exception) {
        std::rethrow_exception(ctx.exception);
    }
}

}  // namespace detail

/// Queues `f(args...)` on the default pool; join the returned task for
/// its result. Throws conc::error.
template <class F, class... Args>
task<detail::invoke_result_t<F, Args...>> spawn(F&& f, Args&&... args) {
    return task<detail::invoke_result_t<F, Args...>>(nullptr, std::forward<F>(f),
                                                     std::forward<Args>(args)...);
}

/// Calls `f(i)` for every `i` in [begin, end) on the default pool's
/// threads and the calling thread, and returns when all calls have. If a
/// call throws, indices not yet started are skipped and the first
/// exception is rethrown here.
template <class I, class F>
void parallel_for(I begin, I end, F&& f) {
    detail::parallel_for(nullptr, begin, end, 0, f);
}

/// Like parallel_for(begin, end, f), handing out at most `grain` indices
/// at a time (0: conc chooses).
template <class I, class F>
void parallel_for(I begin, I end, std::size_t grain, F&& f) {
    detail::parallel_for(nullptr, begin, end, grain, f);
}

/// Owns a thread pool (conc_pool_create); the destructor closes it, which
/// waits for its queued tasks (their conc::task handles stay joinable).
/// Move-only; a moved-from pool throws CONC_ERR_INVALID_STATE.
class pool {
public:
    /// A pool of `threads` threads (0: conc::cpu_count()). Throws conc::error.
    explicit pool(std::size_t threads = 0) { detail::check(conc_pool_create(&pool_, threads)); }

    pool(pool&& other) noexcept : pool_(std::exchange(other.pool_, nullptr)) {}
    pool& operator=(pool&& other) noexcept {
        if (this != &other) {
            (void)conc_pool_close(pool_);
            pool_ = std::exchange(other.pool_, nullptr);
        }
        return *this;
    }
    pool(const pool&) = delete;
    pool& operator=(const pool&) = delete;
    ~pool() { (void)conc_pool_close(pool_); }

    bool is_open() const noexcept { return pool_ != nullptr; }
    std::size_t threads() const noexcept { return pool_ != nullptr ? conc_pool_threads(pool_) : 0; }

    /// Queues `f(args...)` on this pool. Throws conc::error.
    template <class F, class... Args>
    task<detail::invoke_result_t<F, Args...>> spawn(F&& f, Args&&... args) {
        require_open("conc::pool::spawn");
        return task<detail::invoke_result_t<F, Args...>>(pool_, std::forward<F>(f),
                                                         std::forward<Args>(args)...);
    }

    /// conc::parallel_for on this pool.
    template <class I, class F>
    void parallel_for(I begin, I end, F&& f) {
        require_open("conc::pool::parallel_for");
        detail::parallel_for(pool_, begin, end, 0, f);
    }

    /// conc::parallel_for on this pool, at most `grain` indices at a time.
    template <class I, class F>
    void parallel_for(I begin, I end, std::size_t grain, F&& f) {
        require_open("conc::pool::parallel_for");
        detail::parallel_for(pool_, begin, end, grain, f);
    }

    /// Closes now (waiting for queued tasks), reporting a failure, e.g.
    /// CONC_ERR_DEADLOCK from a task of this pool (it then stays open).
    void close() {
        require_open("conc::pool::close");
        detail::check(conc_pool_close(pool_));
        pool_ = nullptr;
    }

    conc_pool* native_handle() const noexcept { return pool_; }

private:
    void require_open(const char* op) const {
        if (pool_ == nullptr) {
            detail::throw_closed(op, "pool");
        }
    }

    conc_pool* pool_ = nullptr;
};

}  // namespace conc

#endif  // CONC_HPP

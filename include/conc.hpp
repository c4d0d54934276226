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
 * - Destructors never throw: mmap, shm and list close; thread and process
 *   join if still joinable (like std::jthread), discarding the result.
 */

#ifndef CONC_HPP
#define CONC_HPP

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "conc.hpp needs C++17 or later; conc.h alone works from C99 and C++11"
#endif

#include "conc.h"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <iostream>
#include <iterator>
#include <memory>
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

// ---------------------------------------------------------------------------
// Shared memory

/// A named shared-memory segment (conc_shm), like Python's SharedMemory.
/// Move-only; the destructor unmaps, and the segment stays until unlinked.
class shm {
public:
    /// Not a segment: size() 0, name() empty.
    shm() noexcept = default;

    /// Takes ownership of a segment made by conc_shm_create or conc_shm_open.
    explicit shm(conc_shm* adopted) noexcept : shm_(adopted) {}

    /// A new zero-filled segment of `size` bytes with a fresh random name.
    static shm create(std::size_t size) {
        conc_shm* s = nullptr;
        detail::check(conc_shm_create(&s, nullptr, size));
        return shm(s);
    }

    /// A new zero-filled segment named `name`. CONC_ERR_ALREADY_EXISTS when
    /// the name is taken, CONC_ERR_INVALID_ARGUMENT for a bad name or size 0.
    static shm create(std::string_view name, std::size_t size) {
        const std::string c_name = detail::c_string(name, "conc::shm::create", "the name");
        conc_shm* s = nullptr;
        detail::check(conc_shm_create(&s, c_name.c_str(), size));
        return shm(s);
    }

    /// Attaches to the existing segment `name` (CONC_ERR_NOT_FOUND if none).
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

    shm(shm&& other) noexcept : shm_(std::exchange(other.shm_, nullptr)) {}
    shm& operator=(shm&& other) noexcept {
        if (this != &other) {
            (void)conc_shm_close(shm_);
            shm_ = std::exchange(other.shm_, nullptr);
        }
        return *this;
    }
    shm(const shm&) = delete;
    shm& operator=(const shm&) = delete;
    ~shm() { (void)conc_shm_close(shm_); }

    bool is_open() const noexcept { return shm_ != nullptr; }
    explicit operator bool() const noexcept { return is_open(); }

    std::uint8_t* data() noexcept { return conc_shm_buf(shm_); }
    const std::uint8_t* data() const noexcept { return conc_shm_buf(shm_); }
    std::size_t size() const noexcept { return conc_shm_size(shm_); }
    /// The name, without a leading '/'.
    std::string_view name() const noexcept { return conc_shm_name(shm_); }

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

    /// Removes the segment's name; this map stays usable until closed.
    void unlink() const {
        require_open("conc::shm::unlink");
        detail::check(conc_shm_unlink(shm_));
    }

    /// Unmaps now, reporting a failure; nothing when not open.
    void close() { detail::check(conc_shm_close(std::exchange(shm_, nullptr))); }

    conc_shm* native_handle() const noexcept { return shm_; }
    /// Gives up ownership: the caller closes the returned segment.
    conc_shm* release() noexcept { return std::exchange(shm_, nullptr); }

private:
    void require_open(const char* op) const {
        if (shm_ == nullptr) {
            detail::throw_closed(op, "segment");
        }
    }
    void check_index(std::size_t index) const {
        if (index >= size()) {
            throw error(CONC_ERR_OUT_OF_RANGE, "conc::shm::at(" + std::to_string(index) +
                                                   "): past the end (" + std::to_string(size()) +
                                                   " bytes)");
        }
    }

    conc_shm* shm_ = nullptr;
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

/// A fixed-length shared list of std::int64_t or double (conc_list), like
/// Python's ShareableList: another process attaches by name alone, and
/// forked children (conc::process) share it. Single-element reads and
/// writes are atomic. Move-only; the destructor unmaps.
template <class T>
class list {
    static_assert(std::is_same_v<T, std::int64_t> || std::is_same_v<T, double>,
                  "conc::list holds std::int64_t or double");
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

    /// A new zero-filled list of `len` elements with a fresh random name.
    static list create(std::size_t len) {
        conc_list* l = nullptr;
        detail::check(conc_list_create(&l, nullptr, traits::type, len));
        return list(l);
    }

    /// A new zero-filled list named `name` (the shared-memory name rules).
    static list create(std::string_view name, std::size_t len) {
        const std::string c_name = detail::c_string(name, "conc::list::create", "the name");
        conc_list* l = nullptr;
        detail::check(conc_list_create(&l, c_name.c_str(), traits::type, len));
        return list(l);
    }

    /// Attaches to the list `name`; CONC_ERR_INVALID_ARGUMENT when it holds
    /// the other element type or is not a list.
    static list open(std::string_view name) {
        const std::string c_name = detail::c_string(name, "conc::list::open", "the name");
        conc_list* l = nullptr;
        detail::check(conc_list_open(&l, c_name.c_str()));
        list opened(l);
        if (conc_list_type(l) != traits::type) {
            throw error(CONC_ERR_INVALID_ARGUMENT, "conc::list<" + std::string(traits::name) +
                                                       ">::open(\"" + c_name +
                                                       "\"): the list holds another type");
        }
        return opened;
    }

    list(list&& other) noexcept : list_(std::exchange(other.list_, nullptr)) {}
    list& operator=(list&& other) noexcept {
        if (this != &other) {
            (void)conc_list_close(list_);
            list_ = std::exchange(other.list_, nullptr);
        }
        return *this;
    }
    list(const list&) = delete;
    list& operator=(const list&) = delete;
    ~list() { (void)conc_list_close(list_); }

    bool is_open() const noexcept { return list_ != nullptr; }
    explicit operator bool() const noexcept { return is_open(); }

    std::size_t size() const noexcept { return conc_list_len(list_); }
    std::string_view name() const noexcept { return conc_list_name(list_); }

    /// Element `index`; CONC_ERR_OUT_OF_RANGE past the end.
    T get(std::size_t index) const {
        require_open("conc::list::get");
        T value{};
        detail::check(traits::get(list_, index, &value));
        return value;
    }

    /// Sets element `index`; CONC_ERR_OUT_OF_RANGE past the end.
    void set(std::size_t index, T value) {
        require_open("conc::list::set");
        detail::check(traits::set(list_, index, value));
    }

    /// Checked like get() and set(): `list[i] = v; T x = list[i];`.
    reference operator[](std::size_t index) noexcept { return reference(this, index); }
    T operator[](std::size_t index) const { return get(index); }

    /// Removes the list's name; this map stays usable until closed.
    void unlink() const {
        require_open("conc::list::unlink");
        detail::check(conc_list_unlink(list_));
    }

    /// Unmaps now, reporting a failure; nothing when not open.
    void close() { detail::check(conc_list_close(std::exchange(list_, nullptr))); }

    conc_list* native_handle() const noexcept { return list_; }
    /// Gives up ownership: the caller closes the returned list.
    conc_list* release() noexcept { return std::exchange(list_, nullptr); }

private:
    explicit list(conc_list* adopted) noexcept : list_(adopted) {}

    void require_open(const char* op) const {
        if (list_ == nullptr) {
            detail::throw_closed(op, "list");
        }
    }

    conc_list* list_ = nullptr;
};

// ---------------------------------------------------------------------------
// Child processes

/// A child process (conc_process): a fork of the caller running any
/// callable that returns int (its exit status, 0-255) or void (0). The
/// child sees the caller's memory as it was, so the callable may capture
/// by reference; it shares conc::shm, conc::list and anonymous maps.
///
/// An exception escaping the callable in the child is printed to stderr
/// and the child exits with 1, as a Python child process does. The
/// destructor joins if still joinable; move-only.
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
    /// Joins this process first if it is joinable, then takes `other`'s.
    process& operator=(process&& other) noexcept {
        if (this != &other) {
            join_quietly();
            handle_ = std::exchange(other.handle_, conc_process{0});
        }
        return *this;
    }
    process(const process&) = delete;
    process& operator=(const process&) = delete;
    ~process() { join_quietly(); }

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

    void join_quietly() noexcept {
        if (joinable()) {
            (void)conc_process_join(handle_, nullptr);
        }
        handle_ = conc_process{0};
    }

    conc_process handle_{0};
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

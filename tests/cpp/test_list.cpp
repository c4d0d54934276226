// conc.hpp's shared memory and shared lists, 0.2: who removes a name
// (create owns it, keep() gives it up, open never owns it, an exception
// never leaves one behind), fetch_add and compare_exchange on integer
// lists, and byte-string lists (conc::list<std::string>).
#include "check.hpp"

#include <unistd.h>

namespace {

bool in_dev_shm(std::string_view name) {
    return ::access(("/dev/shm/" + std::string(name)).c_str(), F_OK) == 0;
}

struct boom {};

// ---------------------------------------------------------------------------
// conc::shm: the name's owner

void shm_create_removes_its_name() {
    std::string name;
    {
        auto created = conc::shm::create(64);
        name = std::string(created.name());
        CHECK(created.owns_name());
        CHECK(in_dev_shm(name));
        {
            auto opened = conc::shm::open(name);
            CHECK(!opened.owns_name());
        }  // an opened one never removes it
        CHECK(in_dev_shm(name));
    }
    CHECK(!in_dev_shm(name));

    // Named, too; and the name is free again afterwards.
    const std::string named = unique_name("own");
    { auto a = conc::shm::create(named, 8); }
    CHECK(!in_dev_shm(named));
    { auto b = conc::shm::create(named, 8); }
    CHECK(!in_dev_shm(named));
}

void shm_exception_leaves_no_segment() {
    const std::string name = unique_name("throw");
    try {
        auto seg = conc::shm::create(name, 16);
        seg[0] = 1;
        throw boom{};
    } catch (const boom&) {
    }
    CHECK(!in_dev_shm(name));
    // A conc::error thrown by the program's next call, as well.
    const std::string second = unique_name("throw2");
    auto e = error_of([&] {
        auto seg = conc::shm::create(second, 16);
        (void)seg.at(16);  // CONC_ERR_OUT_OF_RANGE
    });
    CHECK(e && e->status() == CONC_ERR_OUT_OF_RANGE);
    CHECK(!in_dev_shm(second));
}

void shm_keep_and_release_keep_the_name() {
    const std::string name = unique_name("keep");
    {
        auto seg = conc::shm::create(name, 16);
        seg[3] = 7;
        seg.keep();
        CHECK(!seg.owns_name());
    }
    CHECK(in_dev_shm(name));
    {
        auto again = conc::shm::open(name);
        CHECK(again[3] == 7);
    }
    CHECK(in_dev_shm(name));
    conc::shm::unlink_name(name);

    conc_shm* raw = nullptr;
    {
        auto seg = conc::shm::create(name, 16);
        raw = seg.release();
    }
    CHECK(in_dev_shm(name));
    {
        conc::shm adopted(raw);  // adopting never removes the name
        CHECK(!adopted.owns_name());
    }
    CHECK(in_dev_shm(name));
    conc::shm::unlink_name(name);
}

void shm_moves_close_and_unlinked_names() {
    const std::string a_name = unique_name("mva"), b_name = unique_name("mvb");
    auto a = conc::shm::create(a_name, 8);
    auto b = conc::shm::create(b_name, 8);
    conc::shm moved(std::move(a));
    CHECK(!a.owns_name() && moved.owns_name());  // NOLINT
    moved = std::move(b);                          // the segment moved over is removed
    CHECK(!in_dev_shm(a_name) && in_dev_shm(b_name));
    moved.close();  // close removes the name as well
    CHECK(!in_dev_shm(b_name) && !moved.is_open());
    moved.close();  // nothing

    // Removed already (by unlink(), or by name): no error, no throw.
    {
        auto c = conc::shm::create(a_name, 8);
        c.unlink();
        CHECK_THROWS_STATUS(c.unlink(), CONC_ERR_NOT_FOUND);
    }
    {
        auto d = conc::shm::create(a_name, 8);
        conc::shm::unlink_name(a_name);
        d.close();
    }
    CHECK(!in_dev_shm(a_name));
    // unlink() gives the name up: a segment made under it afterwards (by
    // a C call here, as by another process) outlives the first one.
    {
        auto e = conc::shm::create(a_name, 8);
        e.unlink();
        CHECK(!e.owns_name());
        conc_shm* other = nullptr;
        CHECK(conc_shm_create(&other, a_name.c_str(), 8) == CONC_OK);
        e.close();
        CHECK(in_dev_shm(a_name));
        CHECK(conc_shm_unlink(other) == CONC_OK && conc_shm_close(other) == CONC_OK);
    }

    // A forked child (conc::process) never runs the parent's destructors.
    auto shared = conc::shm::create(b_name, 8);
    conc::process child([&shared] {
        shared[0] = 5;
        return 0;
    });
    CHECK(child.join() == 0);
    CHECK(in_dev_shm(b_name) && shared[0] == 5);
}

// ---------------------------------------------------------------------------
// conc::list: the name's owner

template <class L, class... Args>
void list_ownership(const char* tag, Args... args) {
    std::string name;
    {
        auto created = L::create(args...);
        name = std::string(created.name());
        CHECK(created.owns_name() && in_dev_shm(name));
        { auto opened = L::open(name); }
        CHECK(in_dev_shm(name));
    }
    CHECK(!in_dev_shm(name));

    const std::string named = unique_name(tag);
    try {
        auto l = L::create(named, args...);
        throw boom{};
    } catch (const boom&) {
    }
    CHECK(!in_dev_shm(named));

    {
        auto l = L::create(named, args...);
        l.keep();
    }
    CHECK(in_dev_shm(named));
    {
        auto o = L::open(named);
        CHECK(!o.owns_name());
        o.unlink();
    }
    CHECK(!in_dev_shm(named));

    auto a = L::create(named, args...);
    auto b = L::create(args...);
    const std::string b_name(b.name());
    a = std::move(b);
    CHECK(!in_dev_shm(named) && in_dev_shm(b_name));
    a.close();
    CHECK(!in_dev_shm(b_name));
    {
        auto c = L::create(named, args...);
        c.unlink();
        CHECK(!c.owns_name());
        // The name made again (as by another process) while c is open.
        L::create(named, args...).keep();
    }  // c gave the name up with unlink(): the new list under it stays
    CHECK(in_dev_shm(named));
    L::open(named).unlink();
    conc_list* raw = nullptr;
    {
        auto d = L::create(named, args...);
        raw = d.release();
    }
    CHECK(in_dev_shm(named));
    CHECK(conc_list_unlink(raw) == CONC_OK && conc_list_close(raw) == CONC_OK);
}

void list_create_removes_its_name() {
    list_ownership<conc::list<std::int64_t>>("li", std::size_t{4});
    list_ownership<conc::list<double>>("lf", std::size_t{4});
    list_ownership<conc::list<std::string>>("ls", std::size_t{4}, std::size_t{16});
}

// ---------------------------------------------------------------------------
// Integer lists: fetch_add and compare_exchange

void list_fetch_add_and_compare_exchange() {
    auto ints = conc::list<std::int64_t>::create(3);
    CHECK(ints.item_size() == 8);
    CHECK(ints.fetch_add(0, 5) == 0);
    CHECK(ints.fetch_add(0, -2) == 5);
    CHECK(ints.get(0) == 3);
    ints[1] = INT64_MAX;
    CHECK(ints.fetch_add(1, 1) == INT64_MAX);
    CHECK(ints[1] == INT64_MIN);  // wraps
    CHECK_THROWS_STATUS(ints.fetch_add(3, 1), CONC_ERR_OUT_OF_RANGE);

    std::int64_t expected = 0;
    CHECK(ints.compare_exchange(2, expected, 10));
    CHECK(expected == 0 && ints[2] == 10);
    CHECK(!ints.compare_exchange(2, expected, 20));
    CHECK(expected == 10 && ints[2] == 10);  // expected now holds what was found
    CHECK(ints.compare_exchange(2, expected, 20));
    CHECK(ints[2] == 20);
    CHECK_THROWS_STATUS(ints.compare_exchange(3, expected, 1), CONC_ERR_OUT_OF_RANGE);

    conc::list<std::int64_t> closed;
    CHECK_THROWS_STATUS(closed.fetch_add(0, 1), CONC_ERR_INVALID_STATE);
    CHECK_THROWS_STATUS(closed.compare_exchange(0, expected, 1), CONC_ERR_INVALID_STATE);

    // A counter shared by processes: exact.
    auto counter = conc::list<std::int64_t>::create(2);
    std::vector<conc::process> children;
    for (int p = 0; p < 3; ++p) {
        children.emplace_back([&counter] {
            for (int i = 0; i < 10000; ++i) {
                counter.fetch_add(0, 1);
                std::int64_t seen = counter[1];
                while (!counter.compare_exchange(1, seen, seen + 2)) {
                }
            }
            return 0;
        });
    }
    for (auto& c : children) {
        CHECK(c.join() == 0);
    }
    CHECK(counter[0] == 30000 && counter[1] == 60000);
}

// ---------------------------------------------------------------------------
// Byte-string lists

void bytes_list_round_trip() {
    auto names = conc::list<std::string>::create(4, 8);
    CHECK(names.size() == 4 && names.item_size() == 8);
    CHECK(names.get(0).empty());
    names[0] = "alice";
    names.set(1, std::string_view("a\0b", 3));
    const std::string who = names[0];
    CHECK(who == "alice");
    CHECK(names.get(1) == std::string("a\0b", 3));
    names[2] = names[0];
    CHECK(names.get(2) == "alice");
    names[3] = "12345678";  // exactly item_size
    CHECK(names.get(3) == "12345678");
    CHECK_THROWS_STATUS(names.set(3, "123456789"), CONC_ERR_OUT_OF_RANGE);
    CHECK(names.get(3) == "12345678");  // unchanged
    CHECK_THROWS_STATUS(names.get(4), CONC_ERR_OUT_OF_RANGE);
    CHECK_THROWS_STATUS(names.set(4, "x"), CONC_ERR_OUT_OF_RANGE);
    names[3] = "";
    CHECK(names.get(3).empty());

    std::string reused;
    reused.reserve(64);
    names.get(0, reused);
    CHECK(reused == "alice");

    // Attach by name, in another process too.
    const std::string name(names.name());
    auto opened = conc::list<std::string>::open(name);
    CHECK(opened.item_size() == 8 && opened[0] == std::string("alice"));
    CHECK_THROWS_STATUS(conc::list<std::int64_t>::open(name), CONC_ERR_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(conc::list<double>::open(name), CONC_ERR_INVALID_ARGUMENT);
    auto ints = conc::list<std::int64_t>::create(1);
    CHECK_THROWS_STATUS(conc::list<std::string>::open(ints.name()), CONC_ERR_INVALID_ARGUMENT);
    conc::process child([&name] {
        auto mine = conc::list<std::string>::open(name);
        mine[1] = "from kid";
        return mine.get(0) == "alice" ? 0 : 1;
    });
    CHECK(child.join() == 0);
    CHECK(names.get(1) == "from kid");

    const auto& constant = opened;
    CHECK(constant[1] == "from kid");

    CHECK_THROWS_STATUS(conc::list<std::string>::create(4, 0), CONC_ERR_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(conc::list<std::string>::create(0, 4), CONC_ERR_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(conc::list<std::string>::create("bad/name", 1, 4),
                        CONC_ERR_INVALID_ARGUMENT);
    conc::list<std::string> empty;
    CHECK(empty.size() == 0 && empty.item_size() == 0 && empty.name().empty());
    CHECK_THROWS_STATUS(empty.get(0), CONC_ERR_INVALID_STATE);
    CHECK_THROWS_STATUS(empty.set(0, "x"), CONC_ERR_INVALID_STATE);
}

void bytes_list_readers_never_see_a_torn_value() {
    const std::string a(300, 'a'), b(17, 'B');
    auto list = conc::list<std::string>::create(1, 300);
    conc::process writer([&] {
        for (int i = 0; i < 20000; ++i) {
            list[0] = (i % 2 != 0) ? a : b;
        }
        return 0;
    });
    int bad = 0;
    std::string seen;
    for (int i = 0; i < 20000; ++i) {
        list.get(0, seen);
        bad += !(seen.empty() || seen == a || seen == b);
    }
    CHECK(writer.join() == 0);
    CHECK(bad == 0);
}

}  // namespace

int main() {
    RUN(shm_create_removes_its_name);
    RUN(shm_exception_leaves_no_segment);
    RUN(shm_keep_and_release_keep_the_name);
    RUN(shm_moves_close_and_unlinked_names);
    RUN(list_create_removes_its_name);
    RUN(list_fetch_add_and_compare_exchange);
    RUN(bytes_list_round_trip);
    RUN(bytes_list_readers_never_see_a_torn_value);
    return CHECK_SUMMARY();
}

// conc::mmap's 0.2 additions: create, read, write, write_byte, move,
// resize and advise, and CONC_ERR_IO (thrown) when the file shrinks.
#include "check.hpp"

#include <sys/stat.h>

using namespace conc_test;

namespace {

void create_write_read() {
    temp_dir dir;
    const std::string path = dir.file("probe", "");
    (void)std::remove(path.c_str());
    {
        auto map = conc::mmap::create(path, 16);
        CHECK(map.size() == 16);
        CHECK(map.view() == std::string(16, '\0'));
        map.write("hello, ");
        map.write(std::string_view("world"));
        map.write_byte('!');
        CHECK(map.tell() == 13);
        CHECK_THROWS_STATUS(map.write("toolong"), CONC_ERR_OUT_OF_RANGE);
        CHECK(map.tell() == 13);
        map.seek(0);
        CHECK(map.read(5) == "hello");
        char buf[4] = {};
        CHECK(map.read(buf, 2) == 2 && buf[0] == ',' && buf[1] == ' ');
        CHECK(map.read() == std::string("world!") + std::string(3, '\0'));
        CHECK(map.read().empty());
        map.move(0, 7, 5);
        CHECK(map.view().substr(0, 7) == "world, ");
        CHECK(map.tell() == 16);
        CHECK_THROWS_STATUS(map.move(17, 0, 0), CONC_ERR_OUT_OF_RANGE);
        map.flush();
    }
    CHECK(read_file(path).substr(0, 13) == "world, world!");
    CHECK_THROWS_STATUS(conc::mmap::create(path, 4), CONC_ERR_ALREADY_EXISTS);
    CHECK(read_file(path).size() == 16);
    CHECK_THROWS_STATUS(conc::mmap::create(std::string_view("a\0b", 3), 4),
                        CONC_ERR_INVALID_ARGUMENT);

    auto ro = conc::mmap::open(path);
    CHECK_THROWS_STATUS(ro.write("x"), CONC_ERR_PERMISSION_DENIED);
    CHECK_THROWS_STATUS(ro.write_byte('x'), CONC_ERR_PERMISSION_DENIED);
    CHECK_THROWS_STATUS(ro.move(0, 1, 1), CONC_ERR_PERMISSION_DENIED);
    CHECK_THROWS_STATUS(ro.resize(4), CONC_ERR_INVALID_STATE);
    ro.advise(conc::advice::sequential);
    ro.advise(conc::advice::willneed, 2, 3);
    CHECK_THROWS_STATUS(ro.advise(conc::advice::normal, 17), CONC_ERR_OUT_OF_RANGE);
    CHECK_THROWS_STATUS(ro.advise(static_cast<conc::advice>(9)), CONC_ERR_INVALID_ARGUMENT);

    conc::mmap closed;
    CHECK_THROWS_STATUS(closed.read(1), CONC_ERR_INVALID_STATE);
    CHECK_THROWS_STATUS(closed.write("x"), CONC_ERR_INVALID_STATE);
    CHECK_THROWS_STATUS(closed.resize(1), CONC_ERR_INVALID_STATE);
}

void resize_files_and_anonymous_maps() {
    temp_dir dir;
    const std::string path = dir.file("grow", "abc");
    {
        auto map = conc::mmap::open(path, conc::access::write);
        map.seek(0, conc::whence::end);
        map.resize(10000);
        CHECK(map.size() == 10000);
        CHECK(map.view().substr(0, 3) == "abc");
        CHECK(map.view().substr(3) == std::string(9997, '\0'));
        CHECK(map.tell() == 3);
        map.resize(2);
        CHECK(map.tell() == 2);
        CHECK(map.view() == "ab");
    }
    CHECK(read_file(path) == "ab");

    auto anon = conc::mmap::anonymous(4);
    anon.write("wxyz");
    anon.resize(1 << 16);
    CHECK(anon.view().substr(0, 4) == "wxyz");
    CHECK(anon.tell() == 4);
    anon.resize(0);
    CHECK(anon.empty());

    auto copy = conc::mmap::open(path, conc::access::copy);
    CHECK_THROWS_STATUS(copy.resize(4), CONC_ERR_INVALID_STATE);
    auto range = conc::mmap::open_range(path, conc::access::write, 1);
    CHECK_THROWS_STATUS(range.resize(4), CONC_ERR_INVALID_STATE);
}

void a_shrunk_file_throws_io() {
    temp_dir dir;
    const long page = ::sysconf(_SC_PAGESIZE);
    const std::string content(static_cast<std::size_t>(4 * page), 'x');
    const std::string path = dir.file("shrinks", content);
    auto map = conc::mmap::open(path);
    CHECK(::truncate(path.c_str(), page) == 0);
    auto e = error_of([&] { (void)map.find("#"); });
    CHECK(e && e->status() == CONC_ERR_IO && contains(e->what(), "shrank under the map"));
    CHECK_THROWS_STATUS(map.count_lines(), CONC_ERR_IO);
    CHECK_THROWS_STATUS(map.read(), CONC_ERR_IO);
}

}  // namespace

int main() {
    RUN(create_write_read);
    RUN(resize_files_and_anonymous_maps);
    RUN(a_shrunk_file_throws_io);
    return CHECK_SUMMARY();
}

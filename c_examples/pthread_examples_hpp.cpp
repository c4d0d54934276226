// The course document's C++ pthread program (example1, example2, example3),
// written with conc.hpp: a thread runs any callable with its arguments, and
// join() hands back what it returned. (pthread_examples.cpp is the same
// program on the plain C API of conc.h.)

#include <iostream>
#include <string>
#include <vector>

#include "conc.hpp"

using namespace std;

// **************************************************************************
// Any callable can run as a thread; this one takes nothing and returns nothing.
void threadFunction1()
{
    cout << "Hello, World!\n";
}

void example1()
{
    cout << "*************************\n";
    cout << "Example 1 - single thread\n";

    try
    {
        conc::thread thread(threadFunction1); // starts running at once
        thread.join();                        // wait until it terminates
    }
    catch (const conc::error &e)
    {
        cout << "Error in creating thread\n";
        cerr << e.what() << "\n";
    }

    cout << "Example 1 completed\n";
}

// **************************************************************************
// Arguments are passed as they are, typed: no void * to cast back.
void threadFunction2(int id)
{
    // One insertion per line, so that lines of different threads never mix.
    cout << "I am thread #" + to_string(id) + "\n" << flush;
}

void example2()
{
    cout << "*****************************\n";
    cout << "Example 2 - passing arguments\n";

    vector<conc::thread<void>> threads;
    int ids[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

    for (int id : ids)
    {
        threads.emplace_back(threadFunction2, id);
    }

    // Wait for all of them (a conc::thread would also join when destroyed).
    for (auto &thread : threads)
    {
        thread.join();
    }

    cout << "Example 2 completed\n";
}

// **************************************************************************
struct thread_args
{
    int a;
    double b;
};

struct thread_result
{
    long x;
    double y;
};

// The result is returned by value: nothing to malloc in the thread and
// free in the caller.
thread_result thread_func(thread_args args)
{
    return thread_result{10 + args.a, args.a * args.b};
}

void example3()
{
    cout << "*****************************************\n";
    cout << "Example 3 - returning values from threads\n";

    thread_args in = {10, 3.141592653};

    conc::thread threadL(thread_func, in); // a conc::thread<thread_result>
    thread_result out = threadL.join();
    cout << "out -> x = " << out.x << "\tout -> b = " << out.y << endl;

    cout << "Example 3 completed\n";
}

int main(void)
{
    example1();
    example2();
    example3();
}

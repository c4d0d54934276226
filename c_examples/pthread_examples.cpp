#include <iostream>
#include <string>
#include <cstdlib>
#include "conc.h" // conc threads instead of <pthread.h>

using namespace std;

// **************************************************************************
/* function to be run as a thread always must have the same signature:
   it has one void* parameter and returns void */
void *threadFunction1(void *arg)
{
    (void)arg; // unused
    cout << "Hello, World!\n";
    return 0;
}

void example1()
{
    cout << "*************************\n";
    cout << "Example 1 - single thread\n";

    conc_thread thread;

    int createerror = conc_thread_spawn(&thread, threadFunction1, NULL);

    // creates a new thread with default attributes and NULL passed as the
    // argument to the start routine
    if (!createerror) /*check whether the thread creation was successful*/
    {
        conc_thread_join(thread, NULL); /*wait until the created thread terminates*/
    }
    else
    {
        cout << "Error in creating thread\n";
    }

    cout << "Example 1 completed\n";
}

// **************************************************************************

void *threadFunction2(void *arg)
{
    // One << per line: with several, the ten threads' pieces interleave
    // ("I am thread #I am thread #7"), which the document's output does
    // not show.
    cout << ("I am thread #" + to_string(*(int *)arg) + "\n") << flush;
    return NULL;
}

void example2()
{
    cout << "*****************************\n";
    cout << "Example 2 - passing arguments\n";

    conc_thread threads[10];
    int ids[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

    // Create 2 threads t1 and t2 with default attributes which will execute
    // function "thread_func()" in their own contexts with specified arguments.
    for (int i = 0; i < 10; ++i)
    {
        conc_thread_spawn(&threads[i], &threadFunction2, &ids[i]);
    }

    /* This makes the main thread wait on the death of t1 and t2. */
    for (int i = 0; i < 10; ++i)
    {
        conc_thread_join(threads[i], NULL);
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

void *thread_func(void *args_void)
{
    struct thread_args *args = (struct thread_args *)args_void;
    // The thread cannot return a pointer to a local variable
    struct thread_result *res = (struct thread_result *)malloc(sizeof *res);

    res->x  = 10 + args->a;
    res->y = args->a * args->b;
    return res;
}

void example3()
{
    cout << "*****************************************\n";
    cout << "Example 3 - returning values from threads\n";

    conc_thread threadL;
    struct thread_args in = { .a = 10, .b = 3.141592653 };
    void *out_void;
    struct thread_result *out;

    conc_thread_spawn(&threadL, thread_func, &in);
    conc_thread_join(threadL, &out_void);
    out = (struct thread_result *)out_void;
    cout << "out -> x = " << out->x << "\tout -> b = " << out->y << endl;
    free(out);

    cout << "Example 3 completed\n";
}

int main(void)
{
    example1();
    example2();
    example3();
}

// https://www.geeksforgeeks.org/multithreading-c-2/

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>  //Header file for sleep()
#include "conc.h"      // conc threads instead of <pthread.h>

// A normal C function that is executed as a thread
// when its name is specified in pthread_create()
void *myThreadFun(void *vargp)
{
    (void)vargp;          // unused
    sleep(1);
    printf("Printing from Thread \n");
    return NULL;
}

int main()
{
    conc_thread thread_id;
    printf("Before Thread\n");
    conc_thread_spawn(&thread_id, myThreadFun, NULL);
    conc_thread_join(thread_id, NULL);
    printf("After Thread\n");
    exit(0);
}

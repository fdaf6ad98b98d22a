/* A tiny program standing in for a software package of the stack. */
#include <stdio.h>

int main(void) {
    printf("hello from the software layer\n");
    return 0;
}

/* libgreet: the library step A installs and step B links against. */
#ifndef GREET_H
#define GREET_H
const char *greet_message(void);
#endif

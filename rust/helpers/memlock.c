// SPDX-License-Identifier: GPL-2.0

#include <linux/cred.h>
#include <linux/sched/signal.h>
#include <linux/sched/user.h>

__rust_helper struct user_struct *rust_helper_get_current_user(void)
{
	return get_current_user();
}

__rust_helper unsigned long rust_helper_rlimit(unsigned int limit)
{
	return rlimit(limit);
}

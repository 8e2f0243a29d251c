    /// Releases the lock and waits for a notification in uninterruptible mode, for at most
    /// `jiffies`.
    ///
    /// Like [`CondVar::wait`], but gives up after the timeout. For waits that must not be cut
    /// short by a signal (cleaning up after a process that is being killed, say) yet must not
    /// hang forever on hardware that never answers.
    ///
    /// Returns the jiffies left, 0 if the timeout expired.
    pub fn wait_timeout<T: ?Sized, B: Backend>(
        &self,
        guard: &mut Guard<'_, T, B>,
        jiffies: Jiffies,
    ) -> Jiffies {
        let jiffies = jiffies.try_into().unwrap_or(MAX_SCHEDULE_TIMEOUT);
        self.wait_internal(TASK_UNINTERRUPTIBLE, guard, jiffies) as Jiffies
    }

"""The console's own widgets: the channel list, the message list (a paged option list), the
composer with its @mention completion, the attachment bar, and form controls that stop at their ends."""

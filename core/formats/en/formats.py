"""The site's date and time formats for English (FORMAT_MODULE_PATH, core/settings.py): one 24-hour
style everywhere Django formats a date for us, the admin's lists and change pages included
("5 Dec 2026, 19:58", never "Dec. 5, 2026, 7:55 p.m."). Customer pages add the time zone
("19:58 UTC") in their templates."""

DATE_FORMAT = "j M Y"
SHORT_DATE_FORMAT = "j M Y"
TIME_FORMAT = "H:i"
DATETIME_FORMAT = "j M Y, H:i"
SHORT_DATETIME_FORMAT = "j M Y, H:i"
MONTH_DAY_FORMAT = "j F"
YEAR_MONTH_FORMAT = "F Y"

"""The references page labels each entry the way the chapters cite it, "Asperti et al., 2022", instead of
pybtex's alpha labels ("ABF22"), which a reader of author-year citations cannot match."""
from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            names = [" ".join(person.last_names) for person in people]
            if len(names) > 2:
                who = f"{names[0]} et al."
            else:
                who = " and ".join(names)
            yield f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearStyle(UnsrtStyle):
    default_label_style = AuthorYearLabels
    default_sorting_style = "author_year_title"


def setup(app):
    register_plugin("pybtex.style.formatting", "vaelab_author_year", AuthorYearStyle)
    return {"parallel_read_safe": True}

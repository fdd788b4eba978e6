"""Sphinx settings for the course's website. `website/build.py` copies this file into the staged
source folder (build/site-src/) with the notebooks and the generated landing page, then runs Sphinx.

Nothing here may reach the web, at build time or when a page is shown: the notebooks are rendered
from their committed outputs (never executed), the theme ships its own CSS, JS and icons, and the
Jupyter widget manager, which would load from a CDN, is switched off. build.py then checks the
built HTML for anything loaded from outside the site.
"""

project = "Decoupled multimodal features, reproduced"
html_title = project
html_show_copyright = False

extensions = ["myst_nb"]
root_doc = "index"

# The committed executed notebooks are the course: render their stored outputs, never re-run them.
nb_execution_mode = "off"
# myst-nb would load require.js and the widget manager from a CDN for notebooks with widget state
# (02's progress bars). Their text output is shown instead.
nb_ipywidgets_js = {}
# `[text](page.ipynb#a-section)` links, checked at build time.
myst_heading_anchors = 2

html_theme = "sphinx_book_theme"
html_theme_options = {
    "show_navbar_depth": 1,
    "show_toc_level": 2,
    "use_download_button": True,
    "use_fullscreen_button": False,
    # sphinx-book-theme keeps search in the sidebar; without this pydata-sphinx-theme 0.20 adds a
    # second search bar in a top header.
    "navbar_persistent": [],
    "footer_content_items": ["extra-footer.html"],
    "extra_footer": "<p>Built from the course's committed, executed notebooks (not re-run) with Sphinx, "
                    "MyST-NB and sphinx-book-theme.</p>",
}
# Show titles and prose as written: Sphinx's smart quotes would turn the notebooks' ' into ’, so a
# page's heading would no longer be the notebook's title.
smartquotes = False
html_use_index = False  # an empty general index page helps no one
html_domain_indices = False
# MathJax would come from a CDN; no page needs it (the notebooks write √d as text, not LaTeX). If one
# ever does, build.py's offline check names the page and fails the build.
